"""The house rules of the README's developer map, read from the source: which folder may import which,
and no import circles (imports inside functions count), so a misplaced helper fails here, not in review."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("harness", "models", "datasets", "reports", "jobs")
ENTRY = {"bench", "finishing", "checkpoint_run", "score_run"}  # one library call per command, over a run
JOBS_SIDE = {"planning", "submission"}  # plan and submit: sweeps and configs as cluster jobs
SUBPACKAGES = {"training", "evaluation", "sweep", "metrics", "commands"}

# room -> the rooms it may import (besides itself). The README's developer map says the same in words.
LIBRARY = {"models", "datasets", "reports"}
ALLOWED = {
    "models": set(),
    "datasets": set(),
    "reports": {"datasets"},
    "jobs": {"datasets", "models"},
    "harness.floor": LIBRARY,
    "harness.metrics": set(),
    "harness.training": {"harness.floor", "harness.metrics", "models", "datasets"},
    "harness.cli": {"harness.floor", "harness.training", "models", "datasets"},
}
ALLOWED["harness.evaluation"] = {"harness.training", "harness.metrics", "harness.floor"} | LIBRARY
ALLOWED["harness.entry"] = ALLOWED["harness.evaluation"] | {"harness.evaluation"}
ALLOWED["harness.sweep"] = ALLOWED["harness.entry"] | {"harness.entry", "jobs"}
ALLOWED["harness.jobs_side"] = {"harness.sweep", "harness.floor", "jobs"} | LIBRARY
ALLOWED["harness.commands"] = set(ALLOWED) - {"harness.commands", "harness.cli"}


def _modules() -> dict[str, Path]:
    mods = {}
    for top in TOPS:
        for f in (ROOT / top).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / top).with_suffix("").parts if p != "__init__"]
            mods[".".join(["decodiff", top, *parts])] = f
    return mods


def _room(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[0] != "harness":
        return parts[0]
    if len(parts) == 1:
        return "harness.floor"
    if parts[1] in SUBPACKAGES:
        return f"harness.{parts[1]}"
    if parts[1] == "cli":
        return "harness.cli"
    return "harness.entry" if parts[1] in ENTRY else "harness.jobs_side" if parts[1] in JOBS_SIDE else "harness.floor"


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import (the project writes absolute ones)"
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.add(target if target in mods else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in mods and m != module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_every_import_points_down_the_map():
    wrong = [
        f"{m} ({_room(m)}) imports {t} ({_room(t)})"
        for m, targets in _graph().items()
        for t in sorted(targets)
        if _room(t) != _room(m) and _room(t) not in ALLOWED[_room(m)]
    ]
    assert wrong == [], "imports against the developer map:\n" + "\n".join(wrong)


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                circles.append(sorted([v, *comp]))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_the_readme_map_names_every_package_and_module_of_harness():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## For developers") :]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    named = set(re.findall(r"`((?:harness|models|datasets|reports|jobs)/[a-z_/]*)`", section))
    folders = {
        str(p.relative_to(ROOT)) + "/"
        for top in TOPS
        for p in [ROOT / top, *(ROOT / top).rglob("*")]
        if p.is_dir() and (p / "__init__.py").exists()
    }
    assert folders - named == set(), f"packages missing from the README's developer map: {sorted(folders - named)}"
    assert {n for n in named if n.endswith("/")} - folders == set(), "the map names folders that do not exist"
    top_modules = {p.stem for p in (ROOT / "harness").glob("*.py") if p.stem != "__init__"}
    missing = {m for m in top_modules if f"`{m}`" not in section}
    assert missing == set(), f"harness modules missing from the README's developer map: {sorted(missing)}"
