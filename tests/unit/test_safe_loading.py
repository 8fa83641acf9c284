"""Source scan: nothing a user hands in is unpickled, and no tar is extracted to disk.

Checkpoints, prompts and CLIP weights are user files; ``torch.load`` must run with
``weights_only=True`` (or the file is safetensors), ``pickle`` / ``np.load(allow_pickle=True)`` /
``tarfile.extractall`` are not used at all. Scans every Python file of the project with ``ast``.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("ovseg", "pipelines", "jobs", "bench", "tests")


def _sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _findings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        kwargs = {k.arg: k.value for k in node.keywords}
        if name == "torch.load" or name.endswith(".torch.load"):
            value = kwargs.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append((node.lineno, "torch.load without weights_only=True"))
        elif name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load"):
            found.append((node.lineno, name))
        elif name in ("np.load", "numpy.load") and isinstance(kwargs.get("allow_pickle"), ast.Constant) \
                and kwargs["allow_pickle"].value:
            found.append((node.lineno, "np.load(allow_pickle=True)"))
        elif name.endswith((".extractall", ".extract")) and "tar" in name.lower():
            found.append((node.lineno, f"{name}: tar extracted to disk"))
    return found


def test_the_scan_finds_what_it_looks_for():
    bad = ast.parse("import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
                    "tar.extractall(d)\ntorch.load(p, map_location='cpu', weights_only=True)\n")
    assert [line for line, _ in _findings(bad)] == [2, 3, 4, 5]


def test_no_unsafe_loading_anywhere():
    sources = _sources()
    assert len(sources) > 50
    problems = [f"{p.relative_to(REPO)}:{line}: {what}" for p in sources
                for line, what in _findings(ast.parse(p.read_text(), str(p)))]
    assert not problems, "\n".join(problems)
