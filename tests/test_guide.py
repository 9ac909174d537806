"""The user guide (docs/guide.md) must stay true: every ```python block runs.

Blocks are grouped by their ``## `` section and run in order in one fresh namespace per
section (a section's blocks build only on earlier blocks of the same section), inside a
temporary working directory (the guide writes checkpoints and model files). The guide's
blocks are written device-neutral, so they also run with CUDA as the default device on a
GPU machine. A light check makes sure every ``gd.``/``nn.``/``F.``/``optim.`` name the
prose mentions in inline code still exists.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest
from optional_extras import missing_optional_package

import gpudl as gd
from gpudl import functional as F
from gpudl import nn, optim

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def guide_sections(text: str) -> list[tuple[str, list[str]]]:
    """``[(section title, [python blocks in order])]``; text before the first ``## `` is
    the section "preamble"."""
    sections: list[tuple[str, list[str]]] = []
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    sections.append(("preamble", _FENCE.findall(parts[0])))
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        sections.append((title.strip(), _FENCE.findall(body)))
    return sections


def _prose(text: str) -> str:
    """The guide without its fenced code blocks (inline code lives in the prose)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


SECTIONS = guide_sections(GUIDE.read_text())
WITH_CODE = [(title, blocks) for title, blocks in SECTIONS if blocks]


def test_guide_has_the_catalogue_sections():
    titles = " | ".join(t.lower() for t, _ in SECTIONS)
    for topic in ("devices", "autodiff", "tensor", "activations", "layers", "losses",
                  "optimizers", "training", "inspection", "models", "timing",
                  "pytorch", "limits"):
        assert topic in titles or (topic == "autodiff" and "differentiation" in titles), topic
    assert len(WITH_CODE) >= 12


def test_section_splitting_and_block_extraction():
    text = ("intro\n```python\na = 1\n```\n## One\n```python\nb = 2\n```\ntext\n"
            "```python\nc = 3\n```\n## Two\n```bash\nls\n```\n")
    assert guide_sections(text) == [("preamble", ["a = 1\n"]), ("One", ["b = 2\n", "c = 3\n"]),
                                    ("Two", [])]


def run_section(title: str, blocks: list[str]) -> None:
    namespace: dict = {"__name__": f"guide_{title}"}
    for i, block in enumerate(blocks):
        filename = f"docs/guide.md [{title}] block {i}"
        error = None
        try:
            exec(compile(block, filename, "exec"), namespace)
        except Exception as exc:  # reported below, outside the handler (no chained traceback)
            package = missing_optional_package(exc)
            if package is not None:
                pytest.skip(f"docs/guide.md [{title}] needs the optional package {package!r}")
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
            line = frames[-1].lineno if frames else None
            error = (f"docs/guide.md, section {title!r}, python block {i} (0-based), line "
                     f"{line} of the block, raised {type(exc).__name__}: {exc}\n"
                     f"--- block ---\n{block}")
        if error is not None:
            pytest.fail(error, pytrace=False)


@pytest.mark.parametrize("title,blocks", WITH_CODE, ids=[t for t, _ in WITH_CODE])
def test_guide_section_runs(title, blocks, tmp_path, monkeypatch, device):
    monkeypatch.chdir(tmp_path)  # checkpoints and model files land here
    # no timed assertion (a loaded machine would fail it): `make test` prints the slowest
    # tests, where a guide section that grew too long shows up
    run_section(title, blocks)


def test_a_failing_block_names_its_section_and_index():
    with pytest.raises(pytest.fail.Exception, match=r"section 'Demo', python block 1"):
        run_section("Demo", ["x = 1\n", "raise ValueError('boom')\n"])


# the guide's prose also names gpudl's subpackages bare (the model table: `models.vgg11`)
_ROOTS = {"gd": gd, "nn": nn, "F": F, "optim": optim, "models": gd.models, "data": gd.data,
          "inspect": gd.inspect, "metrics": gd.metrics}
_NAME = re.compile(r"(?<![\w.])(" + "|".join(_ROOTS) + r")((?:\.[A-Za-z_]\w*)+)")


def inline_names(text: str) -> set[str]:
    """Dotted names rooted at gd/nn/F/optim (and models/data/inspect/metrics) inside inline
    `code` spans of the prose; a span may wrap onto the next line, as Markdown allows."""
    names = set()
    for span in re.findall(r"`([^`]+)`", _prose(text)):
        for root, path in _NAME.findall(span):
            names.add(root + path)
    return names


def test_inline_names_resolve():
    names = inline_names(GUIDE.read_text())
    assert len(names) > 50  # the check is looking at something
    missing = []
    for name in sorted(names):
        root, *attrs = name.split(".")
        obj = _ROOTS[root]
        for attr in attrs:
            if not hasattr(obj, attr):
                missing.append(name)
                break
            obj = getattr(obj, attr)
    assert not missing, f"names in docs/guide.md's inline code that gpudl lacks: {missing}"


def test_inline_name_extraction():
    text = ("Use `F.relu`/`nn.ReLU` and `optim.sgd(0.1,\nmomentum=0.9)`, `gd.ops.tanh`; "
            "not `np.tanh` or `torch.nn.Linear`.\n```python\nF.nope\n```\n")
    assert inline_names(text) == {"F.relu", "nn.ReLU", "optim.sgd", "gd.ops.tanh"}
