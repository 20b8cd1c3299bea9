"""The public API is one list: ``advsimplex.__all__`` and the README's API table name the same objects, and
every signature in the table is the real one (parameter names, kinds and default values)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import torch

import advsimplex

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `(?P<entry>[^`]+)` \|")


def table_entries() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Public API") :]
    section = section[: section.index("\n## ", 1)]
    return [m.group("entry") for line in section.splitlines() if (m := ROW.match(line))]


def parse_entry(entry: str) -> tuple[str, list[tuple[str, str, str | None]] | None]:
    """``name(a, b=1, *, c=None)`` → (name, [(param, kind, default source)]); a bare name → (name, None)."""
    if "(" not in entry:
        return entry, None
    name, _, rest = entry.partition("(")
    tree = ast.parse(f"def f({rest[:-1]}): pass").body[0].args
    params = []
    positional = tree.args
    pos_defaults = [None] * (len(positional) - len(tree.defaults)) + tree.defaults
    for arg, default in zip(positional, pos_defaults):
        params.append((arg.arg, "positional", None if default is None else ast.unparse(default)))
    for arg, default in zip(tree.kwonlyargs, tree.kw_defaults):
        params.append((arg.arg, "keyword", None if default is None else ast.unparse(default)))
    return name, params


def resolve(name: str):
    obj = advsimplex
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def test_readme_table_lists_exactly_all():
    names = {parse_entry(e)[0].split(".")[0] for e in table_entries()}
    assert names == set(advsimplex.__all__), names ^ set(advsimplex.__all__)


@pytest.mark.parametrize("entry", table_entries())
def test_readme_signatures_are_the_real_ones(entry):
    name, documented = parse_entry(entry)
    obj = resolve(name)
    if documented is None:
        return
    real = [p for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "cls")]
    assert [p.name for p in real] == [d[0] for d in documented], entry
    for p, (_, kind, default) in zip(real, documented):
        assert (p.kind == inspect.Parameter.KEYWORD_ONLY) == (kind == "keyword"), (entry, p.name)
        if p.default is inspect.Parameter.empty:
            assert default is None, (entry, p.name, "documented with a default it does not have")
        else:
            assert default is not None, (entry, p.name, "has a default the table does not show")
            assert eval(default, {"torch": torch}) == p.default, (entry, p.name, default, p.default)


def test_package_docstring_points_to_the_one_list():
    assert "__all__" in advsimplex.__doc__ and "README" in advsimplex.__doc__
    for name in ("ZeroShotModel", "AdvSimplexLoss", "simplex_alignment", "simplex_head", "pgd_trajectory"):
        assert name in advsimplex.__doc__
