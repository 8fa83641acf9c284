"""Functions with more than three parameters take the ones past the third by keyword."""
from __future__ import annotations

import ast

from tests.conftest import REPO

# The procedural world generator's geometry/texture helpers still take long positional lists
# (``_ellipse(cx, cy, rx, ry, n, a0, a1)``); a follow-up converts them. This list may only shrink.
KNOWN = {
    "pipelines/world/captions.py": {"_thing_phrase", "write_captions"},
    "pipelines/world/generate.py": {"make_sample", "generate_split"},
    "pipelines/world/shapes.py": {"_ellipse", "_rect", "rasterize"},
    "pipelines/world/textures.py": {"object_fill", "_noise", "stuff_texture"},
    "pipelines/world/writers.py": {"add"},
}


def _offenders() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for package in ("ovseg", "pipelines", "jobs"):
        for path in sorted((REPO / package).rglob("*.py")):
            for fn in ast.walk(ast.parse(path.read_text())):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
                if names[:1] in (["self"], ["cls"]):
                    names = names[1:]
                if len(names) > 3:
                    out.setdefault(path.relative_to(REPO).as_posix(), set()).add(fn.name)
    return out


def test_functions_take_keywords_past_the_third_argument():
    offenders = _offenders()
    new = {m: sorted(f - KNOWN.get(m, set())) for m, f in offenders.items() if f - KNOWN.get(m, set())}
    assert new == {}, f"make the parameters past the third keyword-only (add `*,`): {new}"


def test_the_known_list_only_shrinks():
    offenders = _offenders()
    fixed = {m: sorted(f - offenders.get(m, set())) for m, f in KNOWN.items() if f - offenders.get(m, set())}
    assert fixed == {}, f"these now take keywords: drop them from KNOWN: {fixed}"
