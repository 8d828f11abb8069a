"""The package's layers: imports run one way (the map in ikd_edu/__init__.py's docstring).

Every ``import`` / ``from ... import`` in ikd_edu/**/*.py, function-level ones included, is
read with ``ast``; an import of a later layer, of ``viz`` from below the application layer, or
of ``train`` from ``data`` fails with the file and line. The checker is also run on a small
synthetic import graph, so a broken checker cannot pass silently.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ikd_edu"

#: module (or package prefix) -> layer; the longest matching prefix wins
LAYERS: dict[str, int] = {
    "ikd_edu": 1,  # the facade: its exports are strings, imported lazily
    "ikd_edu._lazy": 1, "ikd_edu._table": 1, "ikd_edu._threads": 1, "ikd_edu.skeleton": 1, "ikd_edu.geometry": 1, "ikd_edu.io": 1,
    "ikd_edu.errors": 1, "ikd_edu.validate": 1, "ikd_edu.exercise_guard": 1,
    "ikd_edu.codec": 2, "ikd_edu.codec_fast": 2,
    "ikd_edu.data": 3, "ikd_edu.evaluate": 3,  # datasets and their metrics (the registry scores with evaluate)
    "ikd_edu.models": 4,
    "ikd_edu.distill": 5,
    "ikd_edu.profile": 6, "ikd_edu.inference": 6,
    "ikd_edu.train": 7,
    "ikd_edu.apps": 8, "ikd_edu.course": 8, "ikd_edu.browse": 8, "ikd_edu.explain": 8, "ikd_edu.cli": 8,
    "ikd_edu.exercises": 8, "ikd_edu.assignments": 8, "ikd_edu.viz": 8,
}
APPLICATION = 8

#: (importer, imported) pairs allowed against the rule, each with its reason
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in layers:
            return layers[prefix]
    raise KeyError(f"{module} is in no layer: add it to LAYERS (tests/test_layers.py) and to the map "
                   "in ikd_edu/__init__.py")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[str, int]]:
    """``(imported ikd_edu module, line)`` for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "ikd_edu"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "ikd_edu":
                continue
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{mod}.{a.name}"
                found.append((sub if is_package_module(sub) else mod, node.lineno))
    return found


def import_graph() -> list[tuple[str, str, str]]:
    """``(importer, imported, "file:line")`` for every ikd_edu -> ikd_edu import."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        for target, line in imports_of(path):
            edges.append((me, target, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def violations(edges, layers: dict[str, int] = LAYERS, allowed=ALLOWED) -> list[str]:
    """One line per import that breaks the layer rules."""
    bad = []
    for src, dst, where in edges:
        if (src, dst) in allowed or src == dst:
            continue
        ls, ld = layer_of(src, layers), layer_of(dst, layers)
        if (dst == "ikd_edu.viz" or dst.startswith("ikd_edu.viz.")) and ls < APPLICATION:
            bad.append(f"{where}: {src} (layer {ls}) imports viz; only the application layer may")
        elif src.startswith("ikd_edu.data") and dst.startswith("ikd_edu.train"):
            bad.append(f"{where}: data imports train ({src} -> {dst})")
        elif ld > ls:
            bad.append(f"{where}: {src} (layer {ls}) imports {dst} (layer {ld}): a lower layer imports a higher one")
    return bad


def test_the_package_imports_run_one_way():
    edges = import_graph()
    assert len(edges) > 50, "the import scan found too few imports: is it reading the package?"
    assert any(src.startswith("ikd_edu.") and " " not in where for src, _, where in edges)
    assert violations(edges) == []


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_function_level_imports_are_seen():
    # browse imports codec-related code inside functions only; the scan must see such imports
    edges = {(s, d) for s, d, _ in import_graph()}
    assert ("ikd_edu.browse", "ikd_edu.inference") in edges


@pytest.mark.parametrize("edge, message", [
    (("ikd_edu.data.coco", "ikd_edu.train.engine"), "data imports train"),
    (("ikd_edu.train.engine", "ikd_edu.viz.curves"), "imports viz"),
    (("ikd_edu.evaluate", "ikd_edu.viz"), "imports viz"),
    (("ikd_edu.models.students", "ikd_edu.distill.logit"), "lower layer imports a higher one"),
    (("ikd_edu.codec", "ikd_edu.data.transforms"), "lower layer imports a higher one"),
])
def test_the_checker_fails_on_a_bad_synthetic_graph(edge, message):
    good = [("ikd_edu.train.engine", "ikd_edu.profile", "x.py:1"), ("ikd_edu.data.coco", "ikd_edu.codec", "x.py:2"),
            ("ikd_edu.apps.quickstart", "ikd_edu.viz.curves", "x.py:3"), ("ikd_edu.viz.curves", "ikd_edu.skeleton", "x.py:4")]
    assert violations(good, allowed={}) == []
    bad = violations(good + [(*edge, "bad.py:9")], allowed={})
    assert len(bad) == 1 and bad[0].startswith("bad.py:9") and message in bad[0]


def test_public_api_names_resolve_and_import_ikd_edu_stays_cheap():
    import subprocess
    import sys

    code = ("import sys, ikd_edu; cheap = 'torch' not in sys.modules; "
            "import os; policy = os.environ.get('GOMP_SPINCOUNT'); "
            "[getattr(ikd_edu, n) for n in ikd_edu.__all__]; print(cheap, policy, len(ikd_edu.__all__))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    cheap, policy, count = out.stdout.split()
    assert cheap == "True", "import ikd_edu imported torch"
    assert policy == "1000" and int(count) > 40  # a short spin before a torch thread sleeps


def _notebook_imports() -> set[tuple[str, str]]:
    found = set()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "\n".join(line for line in "".join(cell["source"]).splitlines()
                            if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ikd_edu"):
                    found |= {(node.module, a.name) for a in node.names}
    return found


def test_every_name_the_notebooks_import_is_exported():
    import ikd_edu

    for module, name in sorted(_notebook_imports()):
        if module == "ikd_edu.exercises" or (module, name) == ("ikd_edu", "course"):
            continue  # the notebooks keep importing the checks and the course helpers directly
        assert module == "ikd_edu", f"notebooks import {name} from {module}: import it from ikd_edu"
        assert name in ikd_edu.__all__, f"notebooks import {name} from {module}: export it from ikd_edu"
        assert getattr(ikd_edu, name) is not None


def test_every_init_uses_the_lazy_exports():
    # one style: `_EXPORTS` + ikd_edu._lazy.lazy_exports, or no exports at all
    for init in sorted(PACKAGE.rglob("__init__.py")):
        text = init.read_text(encoding="utf-8")
        if "__all__" in text or "_EXPORTS" in text:
            assert "lazy_exports(__name__, _EXPORTS, globals())" in text, init
