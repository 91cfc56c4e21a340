"""The layout is the architecture: the sub-packages of ``src/mnistlab`` import each other in
one direction only (docs/architecture.md draws the order), files stay one idea each, and the
training loop exists once. Read from the source, function-level imports included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mnistlab"
SUBPACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
# The order of the stages, bottom up (docs/architecture.md); the top-level modules (config,
# errors, io, runs, plotting) are the base every stage may use.
LAYERS = [
    "data",
    "features",
    "models",
    "evaluation",
    "training",
    "shipping",
    "pretraining",
    "robustness",
    "cli",
]
MAX_LINES = 700


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``mnistlab.*`` module a file imports (module level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return [(name, line) for name, line in found if name.startswith("mnistlab.")]


def _subpackage_graph() -> dict[str, dict[str, list[str]]]:
    """``{importer: {imported: ["file:line", ...]}}`` between sub-packages."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).parts
        if len(parts) < 2 or parts[0] not in SUBPACKAGES:
            continue
        for name, line in _imports(path):
            target = name.split(".")[1]
            if target in SUBPACKAGES and target != parts[0]:
                graph[parts[0]][target].append(f"{path.relative_to(SRC.parent)}:{line}")
    return graph


def test_the_sub_packages_form_no_import_cycle() -> None:
    graph = _subpackage_graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for package in SUBPACKAGES:
        if package not in state:
            visit(package, [package])
    detail = [
        " -> ".join(c) + f" (e.g. {graph[c[-2]][c[-1]][0]})" for c in cycles
    ]
    assert not cycles, "import cycles between sub-packages:\n" + "\n".join(detail)


def test_every_import_goes_down_the_stages() -> None:
    """A stage imports only the stages below it in LAYERS, never one above."""
    assert sorted(LAYERS) == SUBPACKAGES, "docs/architecture.md and LAYERS list every stage"
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{importer} -> {imported}: {where[0]}"
        for importer, targets in _subpackage_graph().items()
        for imported, where in targets.items()
        if rank[imported] > rank[importer]
    ]
    assert not upward, "imports that go up the stages:\n" + "\n".join(sorted(upward))


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from mnistlab.training.loop import fit\n    import mnistlab.data\n"
    )
    assert [name for name, _ in _imports(source)] == [
        "mnistlab.training.loop",
        "mnistlab.training.loop.fit",
        "mnistlab.data",
    ]


def test_files_stay_one_idea_each() -> None:
    long = {
        str(p.relative_to(SRC.parent)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_one_training_loop() -> None:
    """Exactly one file steps an optimizer, and ``train_model`` reads in one sitting."""
    stepping = sorted(
        str(p.relative_to(SRC.parent))
        for p in SRC.rglob("*.py")
        if "optimizer.step()" in p.read_text(encoding="utf-8")
    )
    assert stepping == ["mnistlab/training/loop.py"]
    tree = ast.parse((SRC / "training" / "engine.py").read_text(encoding="utf-8"))
    train_model = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_model"
    )
    assert train_model.end_lineno - train_model.lineno + 1 <= 150
