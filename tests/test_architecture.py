"""The house rules of ARCHITECTURE.md that a machine can check: short functions and modules, a torch-free CLI
parser, and the import contracts (`lint-imports`, run by .ci/run, checks the layers and cycles themselves)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vggt", "training")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
# A longer function must say why it is one piece in a comment starting with this, on its first body lines.
ONE_PIECE_MARKER = "# one piece:"


def python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_modules_are_short():
    long = {
        str(p.relative_to(ROOT)): n for p in python_files() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short_or_say_why():
    long = {}
    for path in python_files():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            head = "\n".join(lines[node.lineno - 1 : node.body[0].lineno + 2])
            if length > MAX_FUNCTION_LINES and ONE_PIECE_MARKER not in head:
                long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a '{ONE_PIECE_MARKER}' comment: {long}"


def test_command_line_parser_does_not_import_torch():
    code = "import sys; from vggt.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_version_flag(capsys):
    from vggt.cli.main import main
    from vggt.version import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vggt {__version__}"


def test_static_reexports_match_the_lazy_ones():
    """`if TYPE_CHECKING:` imports of each lazy package name exactly the attributes it serves."""
    for package in ("vggt", "vggt.models", "vggt.pipeline", "vggt.runtime"):
        module = __import__(package, fromlist=["_ORIGINS"])
        tree = ast.parse(Path(module.__file__).read_text())
        static = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for child in node.body
            if isinstance(child, ast.ImportFrom)
            for alias in child.names
        }
        assert static == set(module._ORIGINS), package
        assert set(module._ORIGINS) <= set(module.__all__), package
        for name, origin in module._ORIGINS.items():
            defined = vars(importlib.import_module(origin))
            assert name in defined, f"{package}.{name}: {origin} has no {name}"
            assert getattr(module, name) is defined[name], f"{package}.{name} is not {origin}.{name}"


def test_the_model_side_never_reads_the_grad_mode():
    """models, heads and layers run one forward whatever the grad mode: the engine is chosen by argument."""
    readers = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in ("models", "heads", "layers")
        for path in sorted((ROOT / "vggt" / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "is_grad_enabled"
    ]
    assert not readers, readers
