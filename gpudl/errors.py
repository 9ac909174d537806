"""Named errors. Each message says which op, which argument, expected vs got, and the fix."""

from __future__ import annotations


class GpudlError(Exception):
    """Base class of every error gpudl raises on purpose."""


class DeviceError(GpudlError):
    """Something is wrong with the device choice."""


class UnknownDeviceError(DeviceError, ValueError):
    """A device name other than "auto", "cpu" or "cuda"."""


class DeviceUnavailableError(DeviceError, RuntimeError):
    """"cuda" was requested but CuPy, the GPU, the driver or NVRTC is missing."""


class DeviceMismatchError(DeviceError, TypeError):
    """NumPy (cpu) and CuPy (cuda) arrays were mixed in one op."""


class ShapeError(GpudlError, ValueError):
    """Operand shapes do not fit the op."""


class DTypeError(GpudlError, TypeError):
    """An operand has a dtype the op does not accept."""


class GradientError(GpudlError, TypeError):
    """A gradient was asked for something that has none (int input, non-scalar output)."""


class TreeMismatchError(GpudlError, ValueError):
    """Two pytrees that should have the same structure do not."""


class KernelError(GpudlError, RuntimeError):
    """A CUDA kernel failed to compile or launch."""


class GradientCheckError(GpudlError, AssertionError):
    """Analytic and numerical gradients disagree (raised by gd.testing.check_grad)."""


class CheckpointError(GpudlError, OSError):
    """A checkpoint file is missing, truncated, corrupt or of an unknown format."""


class LabelError(GpudlError):
    """Integer class labels that do not fit the op (the base of the three label errors).

    Raised by every loss that takes class indices (``F.softmax_cross_entropy``,
    ``nll_loss``, ``sequence_cross_entropy``) through one check in
    ``gpudl/functional/labels.py``, so a mistake gives the same error on every path.
    """


class LabelDTypeError(LabelError, DTypeError):
    """Class labels that are not integers (floats, one-hot rows, Python objects)."""


class LabelShapeError(LabelError, ShapeError):
    """Class labels whose shape is not the input's shape without its class axis."""


class LabelRangeError(LabelError, IndexError, ValueError):
    """A class label outside ``[0, num_classes)`` that is not the ``ignore_index``.

    Both an IndexError (what ``F.softmax_cross_entropy`` raised, as torch does) and a
    ValueError (what the composite losses raised), so code catching either keeps working.
    """


class LayerArgumentError(GpudlError, TypeError, ValueError):
    """A layer or initializer argument of the wrong type or out of range.

    Both a TypeError and a ValueError, so code that caught either keeps working. The
    message names the layer, the argument, what was expected, what was given and the fix
    (often: a torch-order positional call; gpudl infers input sizes).
    """


# --- bad-input errors that keep their builtin meaning (an `except ValueError` still works)
class ConfigError(GpudlError, ValueError):
    """An argument value the op does not accept: an unknown option name, a number out of
    range, or arguments that contradict each other. The message names the op, the argument,
    the accepted values and what was given."""


class ArgumentTypeError(GpudlError, TypeError):
    """An argument of the wrong kind (a list where a layer belongs, a string where a number
    belongs, a callable that is not one)."""


class MissingKeyError(GpudlError, KeyError):
    """A name looked up in a dict that does not hold it (a metric not in the logs, a state
    without its running statistics). Printed as its message, not as KeyError's quoted repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class StateDictKeyError(MissingKeyError):
    """A state dict whose keys do not match the model (``model.load_state_dict`` with
    ``strict=True``): ``missing_keys`` and ``unexpected_keys`` list them, as torch's."""

    def __init__(self, message: str, missing_keys=(), unexpected_keys=()):
        super().__init__(message)
        self.missing_keys, self.unexpected_keys = list(missing_keys), list(unexpected_keys)

    def __reduce__(self):
        return type(self), (self.args[0], self.missing_keys, self.unexpected_keys)


class IndexRangeError(GpudlError, IndexError, ValueError):
    """An integer index outside the axis it indexes (embedding rows, graph nodes, one-hot
    classes). Both an IndexError (what NumPy and torch raise) and a ValueError."""


class TreeTypeError(TreeMismatchError, TypeError):
    """A params/state/updates argument that is not a tree of the expected kind (None, an
    array, a list where the dict returned by ``init`` belongs)."""


class ParamShapeError(TreeMismatchError, ShapeError):
    """A parameter whose shape is not the one the layer's configuration and its input imply
    (params of another model, head or checkpoint). ``path`` is the leaf's key path from the
    params tree given to the outermost container (``"dense2.weight"``); containers prefix
    their child's name as the error passes through them."""

    def __init__(self, path: str, expected: tuple, got: tuple, owner: str, detail: str = ""):
        self.path, self.expected, self.got = path, tuple(expected), tuple(got)
        self.owner, self.detail = owner, detail
        super().__init__(path, self.expected, self.got, owner, detail)

    def within(self, name: str) -> ParamShapeError:
        """The same error one container level up: ``path`` prefixed by ``name``."""
        self.path = f"{name}.{self.path}"
        self.args = (self.path, *self.args[1:])
        return self

    def __str__(self) -> str:
        return (f"{self.owner}: parameter '{self.path}' has shape {self.got}, expected "
                f"{self.expected}{self.detail}. These params were made for another model or "
                "configuration (another head, layer size or input size): use the params "
                "returned by this model's init, or a checkpoint of the same architecture.")


class OptimizerStateError(TreeMismatchError, TypeError):
    """An optimizer state that this optimizer's ``init`` did not make (another optimizer's
    state, or another configuration's: momentum on or off, amsgrad, a schedule)."""


class NonFiniteError(GpudlError, FloatingPointError):
    """NaN or Inf where finite numbers were needed.

    Raised by ``gd.fit`` when the loss or the trained trees stop being finite (the error
    names the epoch and step; ``err.gpudl_history`` holds the History and the last finite
    params), by checkpoint saves given non-finite weights, and under ``gd.debug_nans()`` by
    the first primitive (forward) or gradient rule (backward) that produced a NaN or Inf:
    then ``err.primitive``, ``err.output``, ``err.phase`` and ``err.where`` (the user's
    ``file:line``) say where.
    """


class EmptyDataError(GpudlError, ValueError):
    """``fit``/``evaluate``/``predict`` got data that yields no batch (no rows, or a
    ``drop_last`` loader with fewer rows than one batch)."""


class TrainingConfigError(ConfigError, TypeError):
    """A ``fit`` argument or callback configuration that cannot work (checked before the
    first step): epochs not a positive int, a monitored metric nothing produces, a
    checkpoint path template with unknown fields, a resume that does not fit, ..."""


class UndefinedMetricError(GpudlError, ValueError):
    """A metric that is not defined for the data given: a ROC curve or ROC AUC of labels
    holding one class only (where scikit-learn gives NaN with an UndefinedMetricWarning)."""


class LossFunctionError(TrainingConfigError):
    """A custom ``loss_fn`` given to ``gd.fit`` that returned something other than a scalar
    loss or ``(loss, (new_state, aux))`` (checked on the first batch, before the first
    step): a ``(loss, aux)`` pair, a non-scalar loss, a new state shaped unlike the state
    it was given, logged names that clash, ``metrics=`` without ``y_true``/``y_pred``."""


class UnknownInputKeyError(ConfigError, KeyError):
    """A layer's dict input holding a key the layer does not read (``key_padding_mask`` given
    to a layer that takes it under another name, a typo): the message names the layer, the
    unknown keys and the accepted ones. A ValueError and a KeyError."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ExportError(GpudlError, NotImplementedError):
    """A model that ``gd.export_onnx`` cannot write: a primitive with no ONNX converter (the
    message names the primitive and the line of the model that used it), an unsupported
    setting of one, or an output that does not depend on the input."""
