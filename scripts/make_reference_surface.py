"""Write tests/data/reference_surface.json: the reference package's public names and their signatures.

The reference's `vggt/` package source is read with `ast` only (never imported): every public (no leading
underscore) module-level function and class, with its module path and signature (parameter names, kinds and
defaults as source text; for a class, its ``__init__``, or the nearest base class's in the package), and the
names each package ``__init__.py`` re-exports. tests/test_compat_surface.py checks our package against it.

Usage (the reference is facebookresearch/vggt; any checkout or unpacked archive of it will do)::

    git -C <reference clone> archive <commit> vggt | tar -x -C /tmp/reference
    python scripts/make_reference_surface.py /tmp/reference/vggt --source facebookresearch/vggt@<commit>

Names the project deliberately does not provide stay listed in EXCLUDED below, each with its reason.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference_surface.json"

# Reference names not provided, "module.name" -> reason. Keep this short: everything else must exist.
_XFORMERS = (
    "xFormers nested-tensor helper of the reference's training-time stochastic depth on batch subsets; "
    "our Block drops paths per sample (DropPath)"
)
_CORRELATION = (
    "correlation internal of the tracker; our CorrelationPyramid builds and samples correlations in one step, "
    "with no corr()/sample() pair to adapt"
)
EXCLUDED: dict[str, str] = {
    **{
        f"vggt.layers.block.{name}": _XFORMERS
        for name in (
            "add_residual",
            "drop_add_residual_stochastic_depth",
            "drop_add_residual_stochastic_depth_list",
            "get_attn_bias_and_cat",
            "get_branges_scales",
        )
    },  # fmt: skip
    "vggt.heads.track_modules.blocks.CorrBlock": _CORRELATION,
    "vggt.heads.track_modules.blocks.compute_corr_level": _CORRELATION,
    "vggt.dependency.track_modules.blocks.CorrBlock": _CORRELATION,
    "vggt.dependency.track_modules.track_refine.refine_track_v0": "the reference's superseded first version of "
    "refine_track, called by nothing",
    "vggt.dependency.track_modules.track_refine.compute_score_fn": "the score of refine_track(compute_score=True), "
    "which no caller of the reference asks for; refine_track refuses compute_score=True in one line",
    "vggt.dependency.track_modules.track_refine.extract_glimpse": "patch-cropping internal of refine_track (ours "
    "crops with unfold)",
}

_KINDS = ("positional_only", "positional_or_keyword", "var_positional", "keyword_only", "var_keyword")


def _module_name(package_dir: Path, path: Path) -> str:
    """Dotted module path of a file of the package (`vggt/layers/__init__.py` -> `vggt.layers`)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef, drop_first: bool) -> list[dict]:
    """Parameters of a `def` in signature order: name, kind and default as source text (None: no default)."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    rows = [
        (arg, _KINDS[0] if index < len(args.posonlyargs) else _KINDS[1], default)
        for index, (arg, default) in enumerate(zip(positional, defaults, strict=True))
    ]
    if args.vararg is not None:
        rows.append((args.vararg, _KINDS[2], None))
    rows += [(arg, _KINDS[3], default) for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg is not None:
        rows.append((args.kwarg, _KINDS[4], None))
    if drop_first:
        rows = rows[1:]
    return [
        {"name": arg.arg, "kind": kind, "default": None if default is None else ast.unparse(default)}
        for arg, kind, default in rows
    ]


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run at import time, including those inside module-level `if`/`try` blocks."""
    statements: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            statements += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            statements += _top_level(node.body) + _top_level(node.orelse)
            for handler in node.handlers:
                statements += _top_level(handler.body)
        else:
            statements.append(node)
    return statements


def _imported_names(module: str, tree: ast.Module, is_package: bool) -> dict[str, str]:
    """Names a module imports from inside the package: local name -> "defining.module.name"."""
    names: dict[str, str] = {}
    for node in _top_level(tree.body):
        if not isinstance(node, ast.ImportFrom) or node.module is None and node.level == 0:
            continue
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != "vggt":
            continue
        for alias in node.names:
            names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return names


def _read_package(package_dir: Path) -> dict[str, dict]:
    """Per module: its classes and functions (ast nodes), imports from the package and `__init__` flag."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        name = _module_name(package_dir, path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        defined = {
            node.name: node
            for node in _top_level(tree.body)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        modules[name] = {"defined": defined, "imports": _imported_names(name, tree, is_package), "package": is_package}
    return modules


def _class_init(modules: dict[str, dict], module: str, node: ast.ClassDef) -> tuple[list[dict] | None, str]:
    """The class's `__init__` parameters (without self) and where they come from; None when not in the package."""
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return _parameters(item, drop_first=True), f"{module}.{node.name}"
    for base in node.bases:
        if not isinstance(base, ast.Name):
            continue
        target = _resolve(modules, module, base.id)
        if target is not None and isinstance(target[1], ast.ClassDef):
            return _class_init(modules, *target)
    return None, "outside the package (inherited)"


def _resolve(modules: dict[str, dict], module: str, name: str) -> tuple[str, ast.AST] | None:
    """Follow a name through the package's imports to the module that defines it."""
    for _ in range(len(modules)):
        entry = modules.get(module)
        if entry is None:
            return None
        if name in entry["defined"]:
            return module, entry["defined"][name]
        target = entry["imports"].get(name)
        if target is None:
            return None
        module, name = target.rsplit(".", 1)
    return None


def _entry(modules: dict[str, dict], module: str, name: str, node: ast.AST) -> dict:
    """One manifest entry: kind and signature of a reference function or class."""
    if isinstance(node, ast.ClassDef):
        params, origin = _class_init(modules, module, node)
        return {"kind": "class", "parameters": params, "signature_of": origin}
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    return {"kind": "function", "parameters": _parameters(node, drop_first=False)}


def build_surface(package_dir: Path, source: str) -> dict:
    """The manifest: {"source", "excluded", "modules": {module: {name: entry}}}."""
    modules = _read_package(package_dir)
    surface: dict[str, dict] = {}
    for module, entry in modules.items():
        names: dict[str, dict] = {}
        for name, node in entry["defined"].items():
            if not name.startswith("_"):
                names[name] = _entry(modules, module, name, node)
        if entry["package"]:
            for name, target in entry["imports"].items():
                resolved = _resolve(modules, *target.rsplit(".", 1))
                if not name.startswith("_") and resolved is not None:
                    names[name] = {**_entry(modules, *resolved[:1], name, resolved[1]), "defined_in": resolved[0]}
        surface[module] = dict(sorted(names.items()))
    return {
        "source": source,
        "generator": "scripts/make_reference_surface.py",
        "excluded": dict(sorted(EXCLUDED.items())),
        "modules": dict(sorted(surface.items())),
    }


def main() -> None:
    """Parse the command line and write the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the reference's vggt/ package folder (source files)")
    parser.add_argument("--source", required=True, help="where it came from, e.g. facebookresearch/vggt@<commit>")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"manifest to write (default {OUTPUT})")
    options = parser.parse_args()
    if not (options.package / "__init__.py").is_file() and not (options.package / "models").is_dir():
        parser.error(f"{options.package} is not the reference's vggt/ package folder; pass the folder itself")
    manifest = build_surface(options.package.resolve(), options.source)
    options.out.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    count = sum(len(names) for names in manifest["modules"].values())
    print(f"{options.out}: {count} names in {len(manifest['modules'])} modules")


if __name__ == "__main__":
    main()
