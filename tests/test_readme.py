"""The README's TorchRL snippet runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippet_trains_one_step(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README holds one Python snippet"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    losses = namespace["losses"]
    assert any(key.startswith("loss_") for key in losses.keys())
    encoder = namespace["world_model"].encoder
    assert all(parameter.grad is not None for parameter in encoder.parameters())
