"""gpudl: deep learning on NumPy (CPU) and CuPy (GPU) arrays with hand-written CUDA kernels.

Example:
    >>> import numpy as np, gpudl as gd
    >>> gd.grad(lambda w: (w ** 2).sum())(np.array([1.0, 2.0])).tolist()
    [2.0, 4.0]
"""

from gpudl import (
    autodiff,
    backend,
    bench,
    cuda,
    data,
    distributed,
    errors,
    export,
    functional,
    inspect,
    metrics,
    models,
    nn,
    ops,
    optim,
    random,
    serialization,
    testing,
    train,
    tree,
)
from gpudl.autodiff import debug_nans, grad, stop_gradient, value_and_grad, vjp
from gpudl.backend import (
    asarray,
    device,
    device_reason,
    from_dlpack,
    get_array_module,
    get_device,
    memory_info,
    set_device,
    synchronize,
    to_device,
    to_dlpack,
    to_numpy,
)
from gpudl.errors import (
    CheckpointError,
    DeviceMismatchError,
    DeviceUnavailableError,
    DTypeError,
    GpudlError,
    GradientError,
    KernelError,
    ShapeError,
    TreeMismatchError,
    UnknownDeviceError,
)
from gpudl.export import export_onnx  # imports onnx only when called (gpudl[onnx])
from gpudl.nn.shapes import ShapeDtype
from gpudl.nn.state_dict import state_dict
from gpudl.serialization import load, save
from gpudl.train import evaluate, fit, fit_ensemble, predict

__version__ = "0.1.0"

# The public surface: these names, and nothing else without a leading underscore
# (tests/test_public_surface.py). Submodules first, then functions, then errors.
__all__ = [
    "autodiff", "backend", "bench", "cuda", "data", "distributed", "errors", "export",
    "functional", "inspect", "metrics", "models", "nn", "ops", "optim", "random",
    "serialization", "testing", "train", "tree",
    "asarray", "debug_nans", "device", "device_reason", "evaluate", "export_onnx", "fit", "fit_ensemble",
    "from_dlpack", "get_array_module", "get_device", "grad", "load", "memory_info", "predict", "save",
    "set_device", "state_dict", "stop_gradient", "synchronize", "to_device", "to_dlpack", "to_numpy",
    "value_and_grad", "vjp", "ShapeDtype",
    "CheckpointError", "DeviceMismatchError", "DeviceUnavailableError", "DTypeError",
    "GpudlError", "GradientError", "KernelError", "ShapeError", "TreeMismatchError",
    "UnknownDeviceError",
]
