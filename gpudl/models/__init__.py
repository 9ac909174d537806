"""The course's models, one module per family. ``get_model(name)`` builds one by name."""

from gpudl.models.cnn import lenet5, mlp

_REGISTRY = {"lenet5": lenet5, "mlp": mlp}


def get_model(name: str, **kwargs):
    """Build a model by name (``gpudl train --model NAME``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def available() -> list[str]:
    return sorted(_REGISTRY)


__all__ = ["available", "get_model", "lenet5", "mlp"]
