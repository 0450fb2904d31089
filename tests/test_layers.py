"""The package's floors: a module imports only from its own floor or the floors below it.

``evaluation/`` and ``data/`` never import ``training/``; ``modules/`` never imports
``baselines/``, ``training/`` or ``evaluation/``. Checked on the source with :mod:`ast`, so
imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torchrl_prelar"

#: Folder of the package -> the subpackages its modules must not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "evaluation": ("training",),
    "data": ("training",),
    "modules": ("baselines", "training", "evaluation"),
}


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every import in ``path``, at any depth.

    ``from a import b`` gives both ``a`` and ``a.b`` (``b`` may be a submodule); relative
    imports are resolved against the module's package (``path`` relative to ``root``).
    """
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def forbidden_imports(
    folder: str, forbidden: tuple[str, ...], package: Path = PACKAGE
) -> list[str]:
    """``file:line imports module`` for each import of a forbidden subpackage in
    ``package/folder``."""
    prefixes = tuple(f"torchrl_prelar.{name}" for name in forbidden)
    bad = []
    for path in sorted((package / folder).rglob("*.py")):
        for line, module in imported_modules(path, package.parent):
            if module in prefixes or module.startswith(tuple(f"{p}." for p in prefixes)):
                bad.append(f"{path.relative_to(package.parent)}:{line} imports {module}")
    return sorted(set(bad))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_import_from_a_higher_floor(folder):
    bad = forbidden_imports(folder, FORBIDDEN[folder])
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "torchrl_prelar"
    (package / "data").mkdir(parents=True)
    (package / "data" / "bad.py").write_text(
        "def f():\n    from torchrl_prelar.training import checkpoint\n"
        "    from ..training.pretrain import make_optimizer\n"
    )
    assert forbidden_imports("data", ("training",), package) == [
        "torchrl_prelar/data/bad.py:2 imports torchrl_prelar.training",
        "torchrl_prelar/data/bad.py:2 imports torchrl_prelar.training.checkpoint",
        "torchrl_prelar/data/bad.py:3 imports torchrl_prelar.training.pretrain",
        "torchrl_prelar/data/bad.py:3 imports torchrl_prelar.training.pretrain.make_optimizer",
    ]
