"""The house's rules, checked: no import cycle inside numcnn (function-level imports included),
and the floors call in one direction only (docs/architecture.md draws them)."""
from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "numcnn"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(importer: str, is_package: bool, node, modules) -> set:
    """The numcnn modules an import statement loads (anywhere in the file, functions included),
    with the packages on the way (``import a.b.c`` runs ``a.b``'s __init__ too; the root
    ``numcnn`` package, the public API that gathers everything, is left out)."""
    targets = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        bases = names
        froms = []
    else:
        if node.level:
            pkg = importer if is_package else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                pkg = pkg.rpartition(".")[0]
            base = f"{pkg}.{node.module}" if node.module else pkg
        else:
            base = node.module or ""
        bases = [base]
        froms = [f"{base}.{a.name}" for a in node.names]
    for name in bases + froms:
        if not name.startswith("numcnn"):
            continue
        parts = name.split(".")
        for i in range(2, len(parts) + 1):          # numcnn.a, numcnn.a.b, ...
            prefix = ".".join(parts[:i])
            # the importer's own packages are loaded before it, whatever it imports
            if prefix in modules and not (importer + ".").startswith(prefix + "."):
                targets.add(prefix)
    targets.discard(importer)
    return targets


def import_graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in ast.walk(tree):                 # every import, at any depth
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _resolve(name, path.name == "__init__.py", node, modules)
        graph[name] = edges - {"numcnn"}
    return graph


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan), plus self-loops."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycles_counting_function_level_imports():
    cycles = find_cycles(import_graph())
    assert cycles == [], f"import cycles inside numcnn: {cycles}"


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    """The check itself can fail: a model that imports the trainer inside a method, while the
    trainer imports the model, is a cycle."""
    model_src = "def fit(self):\n    from .training import fit\n"
    training_src = "from .model import Sequential\n"
    modules = {"numcnn.model": None, "numcnn.training": None}
    graph = {}
    for name, src in (("numcnn.model", model_src), ("numcnn.training", training_src)):
        edges = set()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _resolve(name, False, node, modules)
        graph[name] = edges
    assert find_cycles(graph) == [["numcnn.model", "numcnn.training"]]


# floor of each top-level part (lower numbers are called by higher ones, never the reverse);
# parts on the same floor may call each other only where the graph stays acyclic
FLOORS = {
    "numcnn.errors": 0, "numcnn.backend": 0, "numcnn.validate": 0, "numcnn.files": 0,
    "numcnn.init": 0,
    "numcnn.functional": 1,
    "numcnn.layers": 2, "numcnn.losses": 2, "numcnn.metrics": 2,
    "numcnn.model": 3, "numcnn.optim": 3, "numcnn.gradcheck": 4, "numcnn.models": 4,
    "numcnn.architecture": 5, "numcnn.io": 6, "numcnn.data": 2, "numcnn.datasets": 2,
    "numcnn.viz": 5, "numcnn.interop": 7, "numcnn.parallel": 4,
    "numcnn.training": 8, "numcnn.web": 9, "numcnn.cli": 10,
}


def _part(module):
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        key = ".".join(parts[:i])
        if key in FLOORS:
            return key
    return None


def test_calls_go_down_the_floors_only():
    """functional <- layers <- model <- training <- cli; data, io, viz and the web app beside,
    never imported by the floors below them."""
    wrong = []
    for module, targets in import_graph().items():
        if module == "numcnn":
            continue                       # the public API gathers every floor
        src = _part(module)
        if src is None:
            wrong.append(f"{module}: not placed on a floor (add it to FLOORS and docs/architecture.md)")
            continue
        for t in targets:
            dst = _part(t)
            if dst is not None and dst != src and FLOORS[dst] > FLOORS[src]:
                wrong.append(f"{module} (floor {FLOORS[src]}) imports {t} (floor {FLOORS[dst]})")
    assert wrong == []


@pytest.mark.parametrize("name", ["model", "layers", "functional", "optim", "losses"])
def test_lower_floors_do_not_load_the_trainer_or_the_file_format(name):
    """Everything the model and the layers reach, function-level imports included, stays below
    the trainer, the file format, plots and the command."""
    graph = import_graph()
    seen, todo = set(), [f"numcnn.{name}"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph.get(m, ()))
    reached = {m for m in seen if m.startswith(("numcnn.training", "numcnn.io", "numcnn.cli",
                                                "numcnn.web", "numcnn.interop", "numcnn.viz"))}
    assert reached == set()
