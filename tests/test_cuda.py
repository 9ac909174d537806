"""gpudl.cuda's kernel cache and gpudl.compile_check, on the CPU (a fake CuPy where needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gpudl import backend, compile_check, cuda
from gpudl.errors import KernelError

SCE_FILE = "softmax_cross_entropy.cu"


class _FakeModule:
    """``cupy.RawModule`` that counts what it is asked for."""

    built: list[_FakeModule] = []

    def __init__(self, code, options, name_expressions):
        self.name_expressions = tuple(name_expressions)
        self.calls: list[str] = []
        _FakeModule.built.append(self)
        self.fail = False

    def get_function(self, name):
        self.calls.append(name)
        if self.fail:
            raise RuntimeError("NVRTC: error: expected a ';'")
        return SimpleNamespace(name=name, module=self)


@pytest.fixture
def fake_cupy(monkeypatch):
    """A CuPy with RawModule and a current device id that the test can switch."""
    _FakeModule.built = []
    device = SimpleNamespace(id=0)
    fake = SimpleNamespace(RawModule=_FakeModule,
                           cuda=SimpleNamespace(Device=lambda *a: SimpleNamespace(id=device.id)))
    monkeypatch.setattr(backend, "_cupy_module", lambda: fake)
    monkeypatch.setattr(cuda, "SOURCES", {})  # the test's KernelSource registers here
    fake.device = device
    return fake


def test_get_compiles_once_per_device_and_then_only_looks_up(fake_cupy):
    src = cuda.KernelSource(SCE_FILE, ["a<float>", "b<float>"])
    f = src.get("a<float>")
    assert f.name == "a<float>" and src.get("a<float>") is f
    g = src.get("b<float>")
    (module,) = _FakeModule.built  # one RawModule per device, both instances from it
    assert g.module is module and module.calls == ["a<float>", "b<float>"]
    assert src._modules[(0, "a<float>")] is f  # the cache: (device id, name) -> function

    fake_cupy.device.id = 1
    f1 = src.get("a<float>")
    assert f1 is not f and len(_FakeModule.built) == 2 and src.module() is f1.module
    fake_cupy.device.id = 0
    assert src.get("a<float>") is f and len(_FakeModule.built) == 2


def test_undeclared_name_is_an_error_every_time_and_compiles_nothing(fake_cupy):
    src = cuda.KernelSource(SCE_FILE, ["a<float>"])
    for _ in range(2):
        with pytest.raises(KernelError, match=r"does not declare 'a<double>'.*declared: \('a<float>',\)"):
            src.get("a<double>")
    assert _FakeModule.built == []


def test_compile_failure_names_file_and_instance_and_is_not_cached(fake_cupy):
    src = cuda.KernelSource(SCE_FILE, ["a<float>"])
    src.module().fail = True
    with pytest.raises(KernelError, match=r"compiling softmax_cross_entropy.cu \(a<float>\) failed"):
        src.get("a<float>")
    src.module().fail = False
    assert src.get("a<float>").name == "a<float>"


def test_a_file_registers_once(fake_cupy):
    cuda.KernelSource(SCE_FILE, ["a<float>"])
    with pytest.raises(KernelError, match="registered twice"):
        cuda.KernelSource(SCE_FILE, ["b<float>"])


@pytest.mark.gpu
def test_get_returns_the_cached_function_on_the_device():
    src = compile_check.registered_sources()["philox.cu"]
    with backend.device("cuda"):
        f = src.get("philox_words32")
        assert src.get("philox_words32") is f
        assert src._modules[(backend.xp_for("cuda").cuda.Device().id, "philox_words32")] is f


# ----------------------------------------------------------------------------- compile_check
def test_registered_sources_cover_every_kernel_file():
    sources = compile_check.registered_sources()
    assert sources is cuda.SOURCES
    assert {p.name for p in cuda.kernel_dir().glob("*.cu")} <= set(sources)


def test_cli_accepts_the_old_flag_and_arch(monkeypatch):
    seen = []
    monkeypatch.setattr(compile_check, "compile_check", lambda archs: seen.append(archs) or 0)
    assert compile_check.main(["--compile-check", "--arch", "sm_90"]) == 0
    assert compile_check.main([]) == 0
    monkeypatch.setattr(compile_check, "compile_check", lambda archs: 2)
    assert compile_check.main([]) == 1
    assert seen == [["sm_90"], ["sm_80", "sm_90"]]


def test_compile_check_prints_a_line_per_file_and_arch(monkeypatch, tmp_path, capsys):
    for name in ("philox.cu", "stray.cu"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(cuda, "kernel_dir", lambda: tmp_path)
    monkeypatch.setattr(compile_check, "nvrtc_compile", lambda src, arch: 1234)
    try:
        backend.xp_for("cuda").cuda.nvrtc.getVersion()
    except Exception:
        pytest.skip("NVRTC is not installed")
    assert compile_check.compile_check(["sm_80", "sm_90"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("compile-check: NVRTC ") and lines[0].endswith(f"kernels in {tmp_path}")
    n = len(compile_check.registered_sources()["philox.cu"].name_expressions)
    assert lines[1:] == [
        "FAIL stray.cu: no KernelSource declares it (nothing would ever launch it)",
        f"ok   {'philox.cu':32s} sm_80  {n} instances, 1234 bytes cubin",
        f"ok   {'philox.cu':32s} sm_90  {n} instances, 1234 bytes cubin",
        "compile-check: 2 files, 1 failures",
    ]


def _cupy_with_compiler(monkeypatch, compiler, version="99.1.0"):
    fake = SimpleNamespace(__version__=version, cuda=SimpleNamespace(compiler=compiler))
    monkeypatch.setattr(backend, "_cupy_module", lambda: fake)


def test_version_guard_when_the_private_class_is_gone(monkeypatch):
    _cupy_with_compiler(monkeypatch, SimpleNamespace())
    src = compile_check.registered_sources()["philox.cu"]
    with pytest.raises(KernelError, match=r"CuPy 99\.1\.0 has no cupy\.cuda\.compiler\._NVRTCProgram"):
        compile_check.nvrtc_compile(src, "sm_80")


def test_version_guard_when_the_signature_changed(monkeypatch):
    class _NVRTCProgram:
        def __init__(self, src, name="default_program", headers=()):
            pass

        def compile(self, options=()):
            return b"", {}

    _cupy_with_compiler(monkeypatch, SimpleNamespace(_NVRTCProgram=_NVRTCProgram))
    src = compile_check.registered_sources()["philox.cu"]
    with pytest.raises(KernelError, match=r"CuPy 99\.1\.0 has an _NVRTCProgram without the "
                                          r"parameters \['name_expressions', 'method'\]"):
        compile_check.nvrtc_compile(src, "sm_80")


def test_version_guard_when_compile_returns_something_else(monkeypatch):
    class _NVRTCProgram:
        def __init__(self, src, name="default_program", name_expressions=None, method="ptx"):
            pass

        def compile(self, options=(), log_stream=None):
            return b"ptx"

    _cupy_with_compiler(monkeypatch, SimpleNamespace(_NVRTCProgram=_NVRTCProgram))
    src = compile_check.registered_sources()["philox.cu"]
    with pytest.raises(KernelError, match=r"CuPy 99\.1\.0's _NVRTCProgram\.compile returned bytes"):
        compile_check.nvrtc_compile(src, "sm_80")


def test_nvrtc_compile_one_kernel_with_the_installed_cupy():
    try:
        backend.xp_for("cuda").cuda.nvrtc.getVersion()
    except Exception:
        pytest.skip("NVRTC is not installed")
    src = compile_check.registered_sources()["philox.cu"]
    assert compile_check.nvrtc_compile(src, "sm_80") > 0


def test_grid_1d():
    assert cuda.grid_1d(256) == (1,) and cuda.grid_1d(257) == (2,)
    assert cuda.grid_1d(10**12, block=128) == (cuda.MAX_GRID_BLOCKS,)
    assert isinstance(cuda.grid_1d(np.int64(5))[0], int)
