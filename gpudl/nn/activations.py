"""Activations as layers: ``nn.Activation`` by name, and one class per registered activation.

The classes ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Softmax``, ... are built here from the
activation registry (:mod:`gpudl.functional.activation_registry`), so a new activation
needs no code in ``nn``. Each constructor takes the function's hyper-parameters with the
same names and defaults, in torch's order (``nn.LeakyReLU(0.2)``, ``nn.Hardtanh(-2, 2)``,
``nn.Softmax(0)``), checks them when the layer is built, and takes ``name`` by keyword
only. ``nn.PReLU`` (a learned slope) and ``nn.Maxout`` are written by hand.

Example:
    >>> import numpy as np
    >>> from gpudl import nn
    >>> nn.LeakyReLU(0.2).apply({}, {}, np.array([-1.0, 3.0]))[0].tolist()
    [-0.2, 3.0]
    >>> nn.Softmax(0).apply({}, {}, np.zeros((2, 1)))[0].tolist()
    [[0.5], [0.5]]
    >>> import inspect; inspect.signature(nn.Softplus)
    <Signature (beta: 'float' = 1.0, threshold: 'float' = 20.0, *, name: 'str | None' = None)>
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from gpudl import ops
from gpudl.functional import activations as F
from gpudl.functional.activation_registry import ACTIVATIONS, ActivationSpec
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    layer_label,
    positional_limit,
)
from gpudl.nn.base import Layer, array_device, check_params, float_dtype, ignores_key


class Activation(Layer):
    """An activation by name (``nn.Activation("relu")``); keyword arguments go to the function.

    Example:
        >>> import numpy as np
        >>> act = Activation("leaky_relu", negative_slope=0.2)
        >>> act.apply({}, {}, np.array([-1.0, 2.0]))[0].tolist()
        [-0.2, 2.0]
    """

    @positional_limit(1, lambda label, args: (
        f"Hyper-parameters go by keyword ({label}('leaky_relu', negative_slope=0.2)) and so "
        "does the layer name (name='...'); or use the layer class, e.g. nn.LeakyReLU(0.2)."))
    def __init__(self, activation: str | Callable, *, name: str | None = None, **kwargs):
        super().__init__(name)
        if isinstance(activation, str):
            self.fn = F.get_activation(activation)
        elif callable(activation):
            self.fn = activation
        else:
            raise LayerArgumentError(
                f"{layer_label(self)}: activation must be a name such as 'relu' or a function, "
                f"got {activation!r} ({type(activation).__name__})")
        _check_kwargs(self, self.fn, kwargs)
        self.kwargs = kwargs
        self._prefix = activation if isinstance(activation, str) else "activation"

    def prefix(self) -> str:
        return self._prefix

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        return self.fn(x, **self.kwargs), state

    def is_plain_relu(self) -> bool:
        """``relu(x)`` itself, nothing added (Sequential may fuse it into a Dense before)."""
        return self.fn is F.relu and not self.kwargs and type(self).apply is Activation.apply


def _check_kwargs(layer: Layer, fn: Callable, kwargs: dict) -> None:
    """Unknown keyword arguments fail at construction, not at the first forward pass."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins/primitives without a signature: checked on call
        return
    try:
        sig.bind(None, **kwargs)
    except TypeError as e:
        raise LayerArgumentError(
            f"{layer_label(layer)}: the activation {getattr(fn, '__name__', fn)!r} does not take "
            f"{sorted(kwargs)} ({e}); its signature is {sig}") from None


# ------------------------------------------------------------------ hand-written layers
class PReLU(Layer):
    """Leaky ReLU with a learned slope, initialised to 0.25, as torch.nn.PReLU.

    ``num_parameters=1`` (torch's default) learns one shared slope; ``num_parameters=C``
    learns one per channel (axis 1); ``num_parameters=None`` infers C from the input.
    """

    @positional_limit(2)
    def __init__(self, num_parameters: int | None = 1, init: float = 0.25, *,
                 name: str | None = None):
        super().__init__(name)
        if num_parameters is not None:
            num_parameters = check_int(self, "num_parameters", num_parameters)
        self.num_parameters = num_parameters
        self.init_value = check_float(self, "init", init)

    def param_shapes(self, x) -> dict:
        """One slope, or one per channel (axis 1)."""
        return {"weight": (self.num_parameters or (x.shape[1] if x.ndim > 1 else 1),)}

    def init(self, key, x):
        (n,) = self.param_shapes(x)["weight"]
        return {"weight": ops.full((n,), self.init_value, dtype=float_dtype(x),
                                   device=array_device(x))}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        check_params(params, self.param_shapes(x), self, x)
        return F.prelu(x, params["weight"]), state


class Maxout(Layer):
    """Max over ``num_pieces`` groups of features (Goodfellow et al.); no parameters of its own."""

    @positional_limit(2)
    def __init__(self, num_pieces: int, axis: int = -1, *, name: str | None = None):
        super().__init__(name)
        self.num_pieces = check_int(self, "num_pieces", num_pieces)
        self.axis = check_int(self, "axis", axis, minimum=None)

    def apply(self, params, state, x, *, train=False, key=None):
        return F.maxout(x, self.num_pieces, axis=self.axis), state


#: Registered activations whose layer is written by hand above, by class name.
HAND_WRITTEN: dict[str, type[Layer]] = {"Maxout": Maxout}


# ------------------------------------------------------------ layers from the registry
def _no_hyper_parameters(label: str, args: tuple) -> str:
    return (f"{label} has no hyper-parameters; give the layer name by keyword: "
            f"{label}(name='...'). (torch's inplace flag has no meaning here: gpudl never "
            "modifies arrays in place.)")


def _check(layer: Layer, spec: ActivationSpec, arg: str, value: Any) -> Any:
    """Check one hyper-parameter by the function's annotation (unannotated: as given)."""
    kind, positive = spec.types.get(arg), arg in spec.positive
    if kind is float:
        return check_float(layer, arg, value, low=0.0 if positive else None, low_open=positive)
    if kind is int:
        return check_int(layer, arg, value, minimum=1 if positive else None)
    if kind is bool:
        return check_bool(layer, arg, value)
    if get_origin(kind) is Literal:
        return check_choice(layer, arg, value, get_args(kind))
    return value


def _signature(spec: ActivationSpec) -> tuple[inspect.Signature, int]:
    """The layer's ``__init__`` signature (with ``self``) and its positional count."""
    P = inspect.Parameter
    hyper = list(spec.hyper_parameters)
    n = sum(p.kind is P.POSITIONAL_OR_KEYWORD for p in hyper)
    n = n if spec.positional is None else min(spec.positional, n)
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
    params += [p.replace(kind=P.POSITIONAL_OR_KEYWORD if i < n else P.KEYWORD_ONLY)
               for i, p in enumerate(hyper)]
    by_name = {p.name: p for p in hyper}
    for torch_name, ours in spec.torch_names.items():
        note = by_name[ours].annotation
        note = f"{note} | None" if isinstance(note, str) else note
        params.append(P(torch_name, P.KEYWORD_ONLY, default=None, annotation=note))
    params.append(P("name", P.KEYWORD_ONLY, default=None, annotation="str | None"))
    return inspect.Signature(params), n


def _docstring(spec: ActivationSpec, n: int) -> str:
    hyper = [p.name for p in spec.hyper_parameters]
    if not hyper:
        how = "It has no hyper-parameters"
    else:
        first = ", ".join(f"``{h}``" for h in hyper[:n])
        how = (f"Hyper-parameters as the function's, {first} by position (torch's order)"
               if n else "Hyper-parameters as the function's, by keyword")
    torch = "".join(f"; ``{t}=`` is torch's name for ``{ours}``"
                    for t, ours in spec.torch_names.items())
    text = (f"The layer form of ``F.{spec.name}`` (``nn.Activation({spec.name!r})``). "
            f"{how}{torch}; the layer name is keyword-only.")
    return "\n\n".join(textwrap.fill(t, 88, break_on_hyphens=False)
                       for t in (spec.summary, text)) + "\n"


def layer_class(spec: ActivationSpec) -> type[Layer]:
    """The ``nn`` class of a registered activation: hand-written, or built from ``spec``."""
    if spec.layer in HAND_WRITTEN:
        return HAND_WRITTEN[spec.layer]
    sig, n = _signature(spec)
    public = sig.replace(parameters=list(sig.parameters.values())[1:])

    def __init__(self, *args, **kwargs):
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as e:
            raise LayerArgumentError(f"{layer_label(self)}: {e}; its signature is "
                                     f"{public}") from None
        bound.apply_defaults()
        given = {k: v for k, v in bound.arguments.items() if k != "self"}
        name = given.pop("name")
        for torch_name, ours in spec.torch_names.items():
            value = given.pop(torch_name)
            if value is None:
                continue
            if given[ours] != sig.parameters[ours].default:
                raise LayerArgumentError(
                    f"{layer_label(self)}: give {ours} or {torch_name} (torch's name), not "
                    f"both; got {ours}={given[ours]}, {torch_name}={value}")
            given[ours] = value
        checked = {arg: _check(self, spec, arg, value) for arg, value in given.items()}
        message = spec.layer_check(given) if spec.layer_check else None
        if message:
            raise LayerArgumentError(f"{layer_label(self)}: {message}")
        Activation.__init__(self, spec.fn, name=name, **checked)
        self._prefix = spec.name

    __init__.__signature__ = sig
    __init__.__qualname__ = f"{spec.layer}.__init__"
    __init__ = positional_limit(n, None if n else _no_hyper_parameters)(__init__)
    namespace = {"__init__": __init__, "__doc__": _docstring(spec, n),
                 "__module__": __name__, "__qualname__": spec.layer, "spec": spec}
    return type(spec.layer, (Activation,), namespace)


_BUILT: dict[str, tuple[ActivationSpec, type[Layer]]] = {}  # one class per registration


def layer_classes() -> dict[str, type[Layer]]:
    """``nn`` name -> class for every registered activation with a layer (aliases too)."""
    out = {}
    for spec in ACTIVATIONS.values():
        if spec.layer is None:
            continue
        if spec.name not in _BUILT or _BUILT[spec.name][0] is not spec:
            _BUILT[spec.name] = (spec, layer_class(spec))
        out.update(dict.fromkeys((spec.layer, *spec.layer_aliases), _BUILT[spec.name][1]))
    return out


def _listing(classes: dict[str, type[Layer]]) -> str:
    rows = [f"- ``nn.{' / nn.'.join((s.layer, *s.layer_aliases))}"
            f"{inspect.signature(classes[s.layer])}``: ``F.{s.name}``. {s.summary}"
            for s in ACTIVATIONS.values() if s.layer]
    return "\n\nThe activation layers (built from the registry):\n\n" + "\n".join(rows) + "\n"


globals().update(layer_classes())
__doc__ = (__doc__ or "").rstrip() + _listing(layer_classes())
