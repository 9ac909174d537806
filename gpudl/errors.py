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
