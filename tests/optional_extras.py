"""Which optional extra a failure stands for: tests skip, with the reason, when it is missing.

The packages of gpudl's optional extras (pip name -> import name). A test that needs one
that is not installed skips instead of failing (conftest.py's hooks, test_guide's runner);
where the package *is* installed, the same failure stays a real failure.
"""

from __future__ import annotations

import doctest
import importlib.util

OPTIONAL_PACKAGES = {
    "scikit-learn": "sklearn", "safetensors": "safetensors", "matplotlib": "matplotlib",
    "networkx": "networkx", "mlxtend": "mlxtend", "tqdm": "tqdm", "torch": "torch",
    "nbclient": "nbclient", "ipykernel": "ipykernel", "nvidia-ml-py": "pynvml",
    "onnx": "onnx", "onnxruntime": "onnxruntime", "mpi4py": "mpi4py",
}
_IMPORT_TO_PACKAGE = {imp: pip for pip, imp in OPTIONAL_PACKAGES.items()}


def missing_optional_package(exc: BaseException | None) -> str | None:
    """The optional package whose absence caused ``exc`` (walking its causes), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, doctest.UnexpectedException):  # a docstring example raised
            exc = exc.exc_info[1]
            continue
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            top = exc.name.split(".")[0]
            if top in _IMPORT_TO_PACKAGE and importlib.util.find_spec(top) is None:
                return _IMPORT_TO_PACKAGE[top]
        exc = exc.__cause__ or exc.__context__
    return None
