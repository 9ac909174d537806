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
