"""The README's tour must run as written (it is the first code a new user copies)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python block"
    monkeypatch.chdir(tmp_path)  # it saves model.safetensors in the working directory
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert (tmp_path / "model.safetensors").is_file()
    assert len(namespace["history"].history["loss"]) == 2
    assert "Total params" in capsys.readouterr().out
