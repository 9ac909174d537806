"""The activation registry: one registration gives the function, its name and its layer.

``@activation("leaky_relu", layer="LeakyReLU")`` on a function in
``gpudl/functional/activations.py`` makes it ``F.leaky_relu``, makes
``F.get_activation("leaky_relu")`` return it, and makes ``gpudl.nn`` build the layer
class ``nn.LeakyReLU``. The layer's constructor is derived from the function's
signature: the hyper-parameters after ``x`` keep their names, defaults and order (torch's
order), the first ``positional`` of them may be given by position, the rest and ``name``
are keyword-only; each is checked by its annotation (``float``, ``int``, ``bool``,
``Literal[...]``). This module holds data only: ``functional`` never imports ``nn``.

Example:
    >>> from gpudl.functional.activation_registry import ACTIVATIONS
    >>> spec = ACTIVATIONS["leaky_relu"]
    >>> spec.layer, [p.name for p in spec.hyper_parameters]
    ('LeakyReLU', ['negative_slope'])
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpudl.errors import ConfigError

#: A layer-only rule over several hyper-parameters: gets the arguments as given (after
#: their type checks) and returns an error message, or None when they are fine.
LayerCheck = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class ActivationSpec:
    """Everything known about one registered activation."""

    name: str  #: canonical name: ``F.<name>``, lookup key, the layer's name prefix
    fn: Callable
    aliases: tuple[str, ...] = ()  #: also ``F.<alias>`` and lookup keys ("swish")
    lookup_aliases: tuple[str, ...] = ()  #: lookup keys only ("linear": F.linear is Linear)
    layer: str | None = None  #: the ``nn`` class name; None: no layer
    layer_aliases: tuple[str, ...] = ()  #: other ``nn`` names of the same class ("Swish")
    positional: int | None = None  #: hyper-parameters the layer takes by position; None: all
    positive: tuple[str, ...] = ()  #: hyper-parameters the layer requires to be > 0
    torch_names: Mapping[str, str] = field(default_factory=dict)  #: {"dim": "axis"}
    layer_check: LayerCheck | None = None
    summary: str = ""  #: one line for docs and the layer's docstring

    @functools.cached_property
    def hyper_parameters(self) -> tuple[inspect.Parameter, ...]:
        """The function's keyword-capable parameters after ``x`` (annotations as written)."""
        try:
            params = list(inspect.signature(self.fn).parameters.values())[1:]
        except (TypeError, ValueError):  # no introspectable signature: no hyper-parameters
            return ()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(p for p in params if p.kind in kinds)

    @functools.cached_property
    def types(self) -> dict[str, Any]:
        """Evaluated annotations of the hyper-parameters (for the layer's argument checks)."""
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception:  # noqa: BLE001 - an unresolvable hint only means "not checked"
            return {}
        return {p.name: hints[p.name] for p in self.hyper_parameters if p.name in hints}

    @property
    def lookup_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases, *self.lookup_aliases)


#: Registered activations by canonical name, in registration order.
ACTIVATIONS: dict[str, ActivationSpec] = {}
_BY_NAME: dict[str, Callable] = {}


def activation(name: str, *aliases: str, layer: str | tuple[str, ...] | None = None,
               lookup_aliases: tuple[str, ...] = (), positional: int | None = None,
               positive: tuple[str, ...] = (), torch_names: Mapping[str, str] | None = None,
               layer_check: LayerCheck | None = None, doc: str | None = None
               ) -> Callable[[Callable], Callable]:
    """Register the decorated function as the activation ``name``; returns it unchanged.

    ``aliases`` are further names (``F.<alias>`` and lookup); ``layer`` is the ``nn`` class
    name, or a tuple (name, alias names...); ``doc`` overrides the summary line taken from
    the function's docstring (for functions whose docstring is not their own, such as
    ``ops.sigmoid``). The other keywords shape the layer; see :class:`ActivationSpec`.
    """
    layers = (layer,) if isinstance(layer, str) else tuple(layer or ())

    def register(fn: Callable) -> Callable:
        spec = ActivationSpec(
            name=name, fn=fn, aliases=aliases, lookup_aliases=tuple(lookup_aliases),
            layer=layers[0] if layers else None, layer_aliases=layers[1:],
            positional=positional, positive=tuple(positive),
            torch_names=dict(torch_names or {}), layer_check=layer_check,
            summary=doc if doc is not None else _first_paragraph(fn.__doc__))
        taken = [n for n in spec.lookup_names if n in _BY_NAME]
        if taken:
            raise ConfigError(f"activation {name!r}: the name(s) {taken} are already registered")
        unknown = ({*spec.positive, *spec.torch_names.values()}
                   - {p.name for p in spec.hyper_parameters})
        if unknown:
            raise ConfigError(f"activation {name!r}: {sorted(unknown)} named in positive= or "
                             f"torch_names= are not parameters of {fn!r}")
        ACTIVATIONS[name] = spec
        _BY_NAME.update(dict.fromkeys(spec.lookup_names, fn))
        return fn

    return register


def unregister(name: str) -> None:
    """Remove the activation ``name`` and its aliases (tests use temporary registrations)."""
    spec = ACTIVATIONS.pop(name)
    for key in spec.lookup_names:
        del _BY_NAME[key]


def by_name() -> dict[str, Callable]:
    """Lookup name -> function, for ``get_activation``."""
    return _BY_NAME


def functions() -> dict[str, Callable]:
    """``F``'s activation attributes: canonical name and aliases -> function."""
    return {n: s.fn for s in ACTIVATIONS.values() for n in (s.name, *s.aliases)}


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n")[0].split())


# Helpers for other modules and for nn: nothing here is an F.<name> function.
__all__: list[str] = []
