"""The code's shape, as the layout promises it: rooms a reader can hold.

Every package of the product (``service``, ``worker``, ``kerasyard``) and the dev stack keeps
each module under ``MAX_MODULE_LINES`` lines, each folder under ``MAX_FOLDER_MODULES`` modules
(``__init__.py`` not counted) and each function under ``MAX_FUNCTION_LINES`` lines (decorators
and docstring included). A change that grows past one of them splits the module, the folder or
the function by concern instead of raising the number.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "worker", "kerasyard", "devstack")
MAX_MODULE_LINES = 450
MAX_FOLDER_MODULES = 12
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_package_is_found():
    found = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert found == set(PACKAGES)


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these by concern (over {MAX_MODULE_LINES} lines): {long}"


def test_no_folder_holds_more_than_twelve_modules():
    folders: dict[Path, int] = {}
    for p in _modules():
        if p.name != "__init__.py":
            folders[p.parent] = folders.get(p.parent, 0) + 1
    crowded = {str(d.relative_to(ROOT)): n for d, n in folders.items()
               if n > MAX_FOLDER_MODULES}
    assert not crowded, f"give these folders sub-rooms (over {MAX_FOLDER_MODULES}): {crowded}"


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if node.end_lineno - first + 1 > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} "
                           f"({node.end_lineno - first + 1} lines)")
    return out


def test_no_function_is_longer_than_a_screen():
    long = [f for p in _modules() for f in _long_functions(p)]
    assert not long, f"split these (over {MAX_FUNCTION_LINES} lines): {long}"


def test_the_function_check_counts_lines(tmp_path, monkeypatch):
    """The check itself can fail: a four-line function is over a three-line limit."""
    monkeypatch.setattr(f"{__name__}.MAX_FUNCTION_LINES", 3)
    (tmp_path / "probe.py").write_text("def f():\n    a = 1\n    b = 2\n    return a\n")
    assert _long_functions(tmp_path / "probe.py", tmp_path) == ["probe.py:1 f (4 lines)"]
