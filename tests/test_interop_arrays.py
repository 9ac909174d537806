"""Arrays in and out: gd.asarray of torch tensors and other DLPack/``__array__`` objects,
gd.from_dlpack / gd.to_dlpack and torch.from_dlpack on gpudl arrays (shared memory both
ways), and safetensors files with float16 and bfloat16 tensors written by torch.

The CuPy side runs under the emulated device (``GPUDL_EMULATE_GPU=1 pytest -m gpu``) with a
small CPU-backed producer that reports itself as CUDA (the emulator's arrays live in host
memory); real CUDA torch tensors are tested on GPU hardware (``gpu_hardware``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from gpudl.errors import ArgumentTypeError, DeviceUnavailableError, DTypeError

torch = pytest.importorskip("torch")


class DLPackOnly:
    """A producer with nothing but the DLPack protocol (as a JAX array would be seen)."""

    def __init__(self, array, device_type: int = 1):
        self.array, self.device_type = array, device_type

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return (self.device_type, 0)


class ArrayOnly:
    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array, dtype=dtype)


def _emulated() -> bool:
    return getattr(backend.xp_for("cuda"), "__version__", "") == "emulated"


# ------------------------------------------------------------------------ gd.asarray
def test_asarray_of_a_cpu_float32_tensor_is_a_numpy_view():
    t = torch.arange(4, dtype=torch.float32)
    a = gd.asarray(t)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    t[0] = 9.0  # zero-copy: the tensor's memory
    assert a.tolist() == [9.0, 1.0, 2.0, 3.0]


def test_asarray_of_tensors_keeps_the_dtype_rules():
    assert gd.asarray(torch.ones(2, dtype=torch.float64)).dtype == np.float32  # copy
    t64 = torch.ones(2, dtype=torch.float64)
    kept = gd.asarray(t64, dtype=np.float64)
    t64[1] = 5.0
    assert kept.dtype == np.float64 and kept.tolist() == [1.0, 5.0]  # shared
    assert gd.asarray(torch.tensor([1, 2])).dtype == np.int64
    assert gd.asarray(torch.tensor([True, False])).dtype == np.bool_
    assert gd.asarray(torch.tensor([1, 2]), dtype="float32").dtype == np.float32
    assert gd.asarray(torch.tensor(2.5)).shape == ()


def test_asarray_detaches_a_tensor_that_requires_grad():
    w = torch.ones(3, requires_grad=True)
    a = gd.asarray(w * 2)
    assert a.tolist() == [2.0, 2.0, 2.0]
    assert w.grad is None  # nothing flowed back into torch's graph


def test_asarray_upcasts_bfloat16_and_resolves_lazy_bits():
    t = torch.tensor([1.5, -2.0, 3.140625], dtype=torch.bfloat16)
    a = gd.asarray(t)
    assert a.dtype == np.float32 and a.tolist() == [1.5, -2.0, 3.140625]  # exact
    z = torch.tensor([1 + 2j, 3 - 1j]).conj()  # torch's lazy conjugate bit
    assert gd.asarray(z).tolist() == [1 - 2j, 3 + 1j]
    assert gd.asarray(-torch.tensor([1.0, 2.0])).tolist() == [-1.0, -2.0]


def test_asarray_of_other_dlpack_and_array_objects():
    base = np.arange(3, dtype=np.float32)
    shared = gd.asarray(DLPackOnly(base))
    base[0] = 7.0
    assert shared.tolist() == [7.0, 1.0, 2.0]
    assert gd.asarray(ArrayOnly([1.0, 2.0])).dtype == np.float32
    assert gd.asarray(ArrayOnly([1, 2])).tolist() == [1, 2]


def test_asarray_still_refuses_what_is_not_numbers():
    with pytest.raises(DTypeError, match="asarray: argument 'x' must hold numbers"):
        gd.asarray(object())  # neither DLPack nor __array__
    with pytest.raises(DTypeError, match="must be numbers"):
        gd.asarray(None)
    with pytest.raises(DTypeError, match="must be numbers"):
        gd.asarray("1.0")


def test_asarray_of_data_on_an_unusable_gpu_names_the_fix():
    if backend.probe_cuda()[0]:
        pytest.skip("checks the no-GPU path")
    with pytest.raises(DeviceUnavailableError, match=r"asarray: the data is on a CUDA GPU.*x\.cpu\(\)"):
        gd.asarray(DLPackOnly(np.ones(2), device_type=2))


def test_asarray_of_data_on_an_unknown_device():
    with pytest.raises(ArgumentTypeError, match="DLPack device type 8"):
        gd.asarray(DLPackOnly(np.ones(2), device_type=8))


# ------------------------------------------------------------------------ DLPack both ways
def test_from_dlpack_shares_memory_with_numpy_and_torch():
    t = torch.zeros(3)
    a = gd.from_dlpack(t)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    t[1] = 4.0
    a[2] = 5.0
    assert a.tolist() == [0.0, 4.0, 5.0] and t.tolist() == [0.0, 4.0, 5.0]
    assert gd.from_dlpack(torch.arange(3, dtype=torch.float64)).dtype == np.float64  # kept
    n = np.zeros(2, np.int32)
    gd.from_dlpack(n)[0] = 3
    assert n.tolist() == [3, 0]
    assert gd.from_dlpack(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]


def test_torch_from_dlpack_of_a_gpudl_array_shares_memory_both_ways():
    a = gd.asarray([1.0, 2.0, 3.0])
    t = torch.from_dlpack(a)
    assert t.dtype == torch.float32
    t[0] = 10.0
    a[2] = 30.0
    assert a.tolist() == [10.0, 2.0, 30.0] and t.tolist() == [10.0, 2.0, 30.0]
    legacy = torch.utils.dlpack.from_dlpack(gd.to_dlpack(a))  # the capsule form
    legacy[1] = 20.0
    assert a.tolist() == [10.0, 20.0, 30.0]


def test_dlpack_errors():
    with pytest.raises(ArgumentTypeError, match=r"from_dlpack: argument 'x' must have __dlpack__"):
        gd.from_dlpack([1.0, 2.0])
    with pytest.raises(ArgumentTypeError, match=r"from_dlpack: .*must have __dlpack__"):
        gd.from_dlpack(ArrayOnly([1.0]))
    with pytest.raises(DTypeError, match=r"from_dlpack: .*bfloat16.*gd\.asarray"):
        gd.from_dlpack(torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(ArgumentTypeError, match="DLPack device type 8"):
        gd.from_dlpack(DLPackOnly(np.ones(2), device_type=8))
    with pytest.raises(ArgumentTypeError, match=r"to_dlpack: argument 'a' must be a gpudl"):
        gd.to_dlpack([1.0])
    if not backend.probe_cuda()[0]:
        with pytest.raises(DeviceUnavailableError, match="from_dlpack: the data is on a CUDA GPU"):
            gd.from_dlpack(DLPackOnly(np.ones(2), device_type=2))


# ------------------------------------------------------------------------ the CuPy side
@pytest.mark.gpu
def test_cuda_producers_become_cupy_arrays_without_a_copy():
    if not _emulated():
        pytest.skip("the CPU-backed fake CUDA producer needs the emulator; see the hardware test")
    cupy = backend.xp_for("cuda")
    base = np.arange(3, dtype=np.float32)
    fake_cuda = DLPackOnly(base, device_type=2)
    a = gd.from_dlpack(fake_cuda)
    assert isinstance(a, cupy.ndarray)
    base[0] = 8.0
    assert a.get().tolist() == [8.0, 1.0, 2.0]
    on_gpu = gd.asarray(fake_cuda, device="cuda")
    on_host = gd.asarray(fake_cuda, device="cpu")
    base[1] = 9.0
    assert isinstance(on_gpu, cupy.ndarray) and on_gpu.get().tolist() == [8.0, 9.0, 2.0]
    assert type(on_host) is np.ndarray and on_host.tolist() == [8.0, 1.0, 2.0]  # a copy
    again = gd.from_dlpack(on_gpu)  # a CuPy array in: CuPy out, same memory
    assert isinstance(again, cupy.ndarray)
    assert type(gd.to_dlpack(on_gpu)).__name__ == "PyCapsule"


@pytest.mark.gpu
def test_cpu_tensors_go_to_the_gpu():
    cupy = backend.xp_for("cuda")
    a = gd.asarray(torch.tensor([1.0, 2.0], dtype=torch.float64), device="cuda")
    assert isinstance(a, cupy.ndarray) and a.dtype == np.float32
    assert gd.to_numpy(a).tolist() == [1.0, 2.0]


@pytest.mark.gpu_hardware
@pytest.mark.gpu
def test_cuda_torch_tensors_share_memory_with_cupy():
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    cupy = backend.xp_for("cuda")
    t = torch.arange(4, dtype=torch.float32, device="cuda")
    a = gd.asarray(t, device="cuda")
    b = gd.from_dlpack(t)
    t[0] = 9.0
    torch.cuda.synchronize()
    assert isinstance(a, cupy.ndarray) and isinstance(b, cupy.ndarray)
    assert a.get().tolist()[0] == 9.0 and b.get().tolist()[0] == 9.0
    host = gd.asarray(t, device="cpu")  # a copy on the host
    assert type(host) is np.ndarray and host.tolist() == [9.0, 1.0, 2.0, 3.0]
    back = torch.from_dlpack(a)
    a[1] = 7.0
    gd.synchronize()
    assert back.device.type == "cuda" and back[1].item() == 7.0


# ------------------------------------------------------------------------ safetensors
def test_torch_half_and_bfloat16_safetensors_load(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    values = [0.5, -1.25, 3.0]
    sd = {"fc.weight": torch.tensor(values, dtype=torch.bfloat16),
          "fc.bias": torch.tensor(values, dtype=torch.bfloat16),
          "head.weight": torch.tensor(values, dtype=torch.float16),
          "head.bias": torch.tensor(values, dtype=torch.float32)}
    path = tmp_path / "mixed.safetensors"
    st_torch.save_file(sd, str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = gd.load(path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages  # said once per load, not once per tensor
    assert str(path) in messages[0] and "2 bfloat16 tensor(s)" in messages[0]
    assert "float32" in messages[0]
    assert tree["fc"]["weight"].dtype == np.float32 and tree["fc"]["weight"].tolist() == values
    assert tree["head"]["weight"].dtype == np.float16  # float16 stays float16
    assert tree["head"]["weight"].tolist() == values
    assert tree["head"]["bias"].dtype == np.float32
    # float16 saves back as float16; the bfloat16 tensors now are float32
    gd.save(tmp_path / "back.safetensors", tree)
    back = st_torch.load_file(str(tmp_path / "back.safetensors"))
    assert back["head.weight"].dtype == torch.float16
    assert back["fc.weight"].dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no bfloat16 left: no warning
        gd.load(tmp_path / "back.safetensors")


def test_half_weights_load_into_a_model_and_cast_to_float32(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    st_torch.save_file({"weight": torch.ones(2, 3, dtype=torch.float16),
                        "bias": torch.zeros(2, dtype=torch.bfloat16)},
                       str(tmp_path / "w.safetensors"))
    like = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}
    with pytest.warns(UserWarning, match="1 bfloat16 tensor"):
        params = gd.load(tmp_path / "w.safetensors", like=like)
    assert params["weight"].dtype == np.float16
    as_f32 = gd.tree.tree_map(gd.asarray, params)  # what the guide says to do
    assert as_f32["weight"].dtype == np.float32 and as_f32["bias"].dtype == np.float32


def test_a_dtype_gpudl_cannot_read_is_named_not_called_corrupt(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    path = tmp_path / "f8.safetensors"
    st_torch.save_file({"w": torch.ones(2).to(torch.float8_e4m3fn)}, str(path))
    with pytest.raises(gd.CheckpointError, match=r"'w' has dtype F8_E4M3.*t\.float\(\)") as err:
        gd.load(path)
    assert "corrupt" not in str(err.value) and str(path) in str(err.value)
