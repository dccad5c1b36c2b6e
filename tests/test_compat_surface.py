"""Every public name of the reference package exists here under its module path with the reference's signature.

tests/data/reference_surface.json is written by scripts/make_reference_surface.py from the reference's source
(read with `ast`, never imported). For each module it names, this test imports our module and checks each name:
a function or class of that name, whose `inspect.signature` has the reference's parameter names, order and kinds,
and defaults equal to the reference's (its default source text evaluated in our module's namespace).

Two allowances, both invisible to code written for the reference: our signature may go on after the reference's
parameters with parameters of its own that have defaults (e.g. `gradient_checkpointing`), so that every call
written for the reference binds the same way; and a default equals the reference's when the values are equal
numbers (`4.0` for `4`) or equal sequences (a tuple for a list, which we never mutate).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

MANIFEST = json.loads((Path(__file__).parent / "data" / "reference_surface.json").read_text(encoding="utf-8"))
_KINDS = {
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}
_NAMESPACE = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "np": np, "math": math}


def _same_default(module: ModuleType, reference_text: str, ours: object) -> bool:
    """Whether our default equals the reference's, its source text evaluated where our module would see it."""
    try:
        reference = eval(reference_text, {**_NAMESPACE, **vars(module)})  # noqa: S307 (our own manifest)
    except Exception:  # noqa: BLE001 - a name our module does not have: not the same default
        return False
    if ours is reference:
        return True
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(reference, numbers) and not isinstance(ours, bool):
        return not isinstance(reference, bool) and ours == reference
    if isinstance(ours, tuple | list) and isinstance(reference, tuple | list):
        return list(ours) == list(reference)
    try:
        return bool(ours == reference) and type(ours) is type(reference)
    except Exception:  # noqa: BLE001 - tensors and the like compare elementwise
        return False


def _signature_problems(module: ModuleType, name: str, expected: list[dict]) -> list[str]:
    """What differs between our object's signature and the reference's parameters (empty when they match)."""
    ours = list(inspect.signature(getattr(module, name)).parameters.values())
    problems = []
    ours_names = [parameter.name for parameter in ours]
    reference_names = [parameter["name"] for parameter in expected]
    if ours_names[: len(reference_names)] != reference_names:
        return [f"{name}: parameters {ours_names}, reference {reference_names}"]
    for extra in ours[len(expected) :]:
        if extra.default is inspect.Parameter.empty and extra.kind is not inspect.Parameter.VAR_KEYWORD:
            problems.append(f"{name}({extra.name}): our own parameter after the reference's has no default")
    ours = ours[: len(expected)]
    for parameter, reference in zip(ours, expected, strict=True):
        if parameter.kind != _KINDS[reference["kind"]]:
            problems.append(f"{name}({parameter.name}): kind {parameter.kind.name}, reference {reference['kind']}")
        if reference["default"] is None:
            if parameter.default is not inspect.Parameter.empty:
                problems.append(f"{name}({parameter.name}): has default {parameter.default!r}, reference none")
        elif parameter.default is inspect.Parameter.empty:
            problems.append(f"{name}({parameter.name}): no default, reference {reference['default']}")
        elif not _same_default(module, reference["default"], parameter.default):
            problems.append(
                f"{name}({parameter.name}): default {parameter.default!r}, reference {reference['default']}"
            )
    return problems


@pytest.mark.parametrize("module_name", sorted(MANIFEST["modules"]))
def test_reference_module_names_and_signatures(module_name: str) -> None:
    module = importlib.import_module(module_name)
    problems = []
    for name, entry in MANIFEST["modules"][module_name].items():
        if f"{module_name}.{name}" in MANIFEST["excluded"]:
            continue
        ours = getattr(module, name, None)
        if ours is None:
            problems.append(f"{name}: missing")
            continue
        if entry["kind"] == "class" and not inspect.isclass(ours):
            problems.append(f"{name}: not a class ({type(ours).__name__})")
            continue
        if not callable(ours):
            problems.append(f"{name}: not callable")
            continue
        if entry["parameters"] is not None:
            problems += _signature_problems(module, name, entry["parameters"])
    assert not problems, f"{module_name} differs from the reference:\n" + "\n".join(problems)


def test_exclusions_name_reference_entries_with_reasons() -> None:
    for dotted, reason in MANIFEST["excluded"].items():
        module_name, name = dotted.rsplit(".", 1)
        assert name in MANIFEST["modules"].get(module_name, {}), f"{dotted} is not a reference name"
        assert len(reason) > 10, f"{dotted}: give the reason it is not provided"
