"""The import graph, read from the code (every import, at module level or inside a function): one
direction of layers, no cycles, and no private name of ray, hydra, mlflow or optuna outside the one
compat module (`doktra_tune/ray_compat.py`).

Layers, bottom up (a module imports its own layer and those below, never one above):
  0 the method core: `doktra_tune` (config, tasks, data, models, losses, metrics, stages, selection,
    compose, ...), no Ray, Optuna or MLflow wrapping;
  1 `doktra_tune.tracking` (MLflow);
  2 `doktra_tune.plan` (the plan as data, its budget and the dry run: no Ray);
  3 `doktra_tune.cluster` (the Ray session, the node check, the run directory's lease);
  4 `analysis` (tables, plots, reports);
  5 `trainables` (the Ray Tune trainables);
  6 `doktra_tune.search` (the CLI and the driver).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("doktra_tune", "trainables", "analysis")
LAYERS = ("core", "doktra_tune.tracking", "doktra_tune.plan", "doktra_tune.cluster", "analysis", "trainables",
          "doktra_tune.search")
LIBRARIES = ("ray", "hydra", "mlflow", "optuna")
COMPAT = {"doktra_tune.ray_compat"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, the names taken) of every import in the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((base, node.lineno, [alias.name for alias in node.names]))
    return found


def _project_target(module: str, names: list[str]) -> list[str]:
    """The project modules an import reaches: the module itself, or `pkg.sub` for `from pkg import sub`."""
    targets = []
    for name in names:
        if f"{module}.{name}" in MODULES:
            targets.append(f"{module}.{name}")
    if module in MODULES and len(targets) < len(names or [None]):
        targets.append(module)
    return targets


def _layer(module: str) -> int:
    for index, prefix in reversed(list(enumerate(LAYERS))):
        if prefix != "core" and (module == prefix or module.startswith(prefix + ".")):
            return index
    return 0


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, _, names in _imports(name, path):
            graph[name].update(t for t in _project_target(module, names) if t != name)
    return graph


def test_imports_run_one_direction() -> None:
    upward = [f"{name} ({LAYERS[_layer(name)]}) imports {target} ({LAYERS[_layer(target)]})"
              for name, targets in _graph().items() for target in sorted(targets) if _layer(target) > _layer(name)]
    assert not upward, upward


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan); a package's `__init__` that only
    hands on names of its own submodules is not an edge back (`from pkg import x` where x is defined in
    pkg.sub reaches pkg, which imports pkg.sub: that is the package's face, not a loop of logic)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    faces = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    # an edge into a package face from its own submodules is the face, not a cycle
    pruned = {name: {t for t in targets if not (t in faces and name.startswith(t + "."))} for name, targets in graph.items()}
    assert _cycles(pruned) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def test_no_private_library_names_outside_the_compat_module() -> None:
    """`ray._private`, `hydra._internal`, `mlflow.tracking._tracking_service`, `optuna._...`: imported
    or read as an attribute of an imported library module, only in the compat module."""
    offenders = []
    for name, path in MODULES.items():
        if name in COMPAT:
            continue
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> the library module it is
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in LIBRARIES:
                        aliases[(alias.asname or alias.name).split(".")[0]] = alias.asname and alias.name or alias.name.split(".")[0]
                        if _private(alias.name):
                            offenders.append(f"{path.relative_to(REPO)}:{node.lineno} import {alias.name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
                for alias in node.names:
                    if _private(node.module or "") or _private(alias.name):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module} import {alias.name}")
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain, inner = [node.attr], node.value
                while isinstance(inner, ast.Attribute):
                    chain.append(inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id in aliases and _private(".".join(chain)):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {aliases[inner.id]}.{'.'.join(reversed(chain))}")
    assert not offenders, offenders


def test_a_trial_process_never_imports_mlflow() -> None:
    """The driver is the only MLflow writer, so a trial process (every module of `trainables`) does
    not load MLflow: seconds of imports saved each time Tune starts a trial actor."""
    import subprocess
    import sys

    modules = sorted(f"trainables.{p.stem}" for p in (REPO / "trainables").glob("*.py") if p.stem != "__init__")
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout[-2000:]
