"""The package's shape: imports run one way (function-level imports included), leaf modules stay leaves,
and no function is longer than a screen without saying why."""
import ast
from pathlib import Path

import kd_tutorial

PACKAGE = Path(kd_tutorial.__file__).parent
# leaves import nothing of the package but the error base class, itself a leaf
LEAVES = {"errors", "device", "store", "losses", "layer_maps", "profiles", "corpus", "features", "parallel",
          "layer_cache", "bars", "seeding",
          "provenance", "threads", "history"}
MAX_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Every kd_tutorial module that ``path`` imports, at any depth of the file (functions included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kd_tutorial")}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(0, node.level - 1)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if not target.startswith("kd_tutorial"):
                continue
            for alias in node.names:  # "from . import plots" imports the module kd_tutorial.plots
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {m for m in found if m in modules and m != name and m != "kd_tutorial"}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None
    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_is_acyclic_with_function_level_imports_included():
    graph = import_graph()
    assert len(graph) > 20 and graph["kd_tutorial.pipeline"] >= {"kd_tutorial.train", "kd_tutorial.teachers"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_leaf_modules_import_nothing_of_the_package():
    graph = import_graph()
    for leaf in LEAVES:
        ours = graph[f"kd_tutorial.{leaf}"] - {"kd_tutorial.errors"}
        assert ours == set(), f"{leaf} imports {ours}"
    assert graph["kd_tutorial.errors"] == set()


def test_the_teacher_is_trained_above_the_artifact_cache_not_inside_it():
    graph = import_graph()
    assert "kd_tutorial.teachers" not in graph["kd_tutorial.artifacts"]
    assert "kd_tutorial.artifacts" in graph["kd_tutorial.teachers"]
    assert not {"kd_tutorial.pipeline", "kd_tutorial.cli"} & graph["kd_tutorial.teachers"]


def test_which_runs_read_the_teachers_cached_layers_is_decided_between_teachers_and_pipeline():
    graph = import_graph()
    assert {"kd_tutorial.teachers", "kd_tutorial.layer_cache"} <= graph["kd_tutorial.teacher_layers"]
    assert "kd_tutorial.teacher_layers" in graph["kd_tutorial.pipeline"]
    assert not {"kd_tutorial.pipeline", "kd_tutorial.cli", "kd_tutorial.flops"} & graph["kd_tutorial.teacher_layers"]


def test_the_plan_of_runs_sits_below_the_pipeline_and_what_counts_or_searches_it():
    """A FLOP counter and the search read the plan of runs (step budgets, recipes, a run's config), which needs no
    model: they import it from ``plan``, not from the whole pipeline, and the plan imports none of them."""
    graph = import_graph()
    for reader in ("flops", "search"):
        assert "kd_tutorial.plan" in graph[f"kd_tutorial.{reader}"]
        assert "kd_tutorial.pipeline" not in graph[f"kd_tutorial.{reader}"], f"{reader} imports pipeline"
    assert "kd_tutorial.plan" in graph["kd_tutorial.pipeline"]
    above = {f"kd_tutorial.{m}" for m in ("pipeline", "train", "flops", "search", "cli")}
    assert not above & graph["kd_tutorial.plan"], above & graph["kd_tutorial.plan"]


def _reached(graph: dict[str, set[str]], name: str) -> set[str]:
    """Every module ``name`` imports, directly or through others."""
    seen, todo = set(), [name]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_a_cached_runs_history_is_read_without_the_training_loop():
    """artifacts imported train for ``History.from_dict`` alone: the cache of runs, and the plan of runs above it,
    loaded the whole training loop. History is a leaf now, and neither reaches train at any depth."""
    graph = import_graph()
    assert "kd_tutorial.history" in graph["kd_tutorial.artifacts"]
    for name in ("artifacts", "plan", "flops"):  # flops reached it through teacher_layers, for reads_cached_layers
        assert "kd_tutorial.train" not in _reached(graph, f"kd_tutorial.{name}"), f"{name} reaches train"


def test_no_module_imports_a_private_name_of_another():
    """A name another module needs is public (report read evaluate's ``_NOISE``): ``from .x import _name`` ties a
    module to what ``x`` is free to change."""
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("kd_tutorial")):
                private += [f"{path.relative_to(PACKAGE)}:{node.lineno} {alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not private, private


def test_no_function_is_longer_than_a_screen_without_saying_why():
    """A function over 60 lines needs a ``# long: <why>`` comment on the line above its ``def``."""
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES and not lines[first - 2].strip().startswith("# long:"):
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length} lines)")
    assert not too_long, too_long


def test_benchmark_reports_are_read_above_the_flop_counter_not_inside_it():
    """flops held the reading of ``benchmark --report`` files and the projection from them beside its FLOP counts and
    peaks, and cli imported its report checks from there. The readers and the projection are ``bench_reports`` now,
    above ``flops``: it counts, and reads no report, at any depth."""
    graph = import_graph()
    assert "kd_tutorial.flops" in graph["kd_tutorial.bench_reports"]
    for above in ("bench_reports", "benchmark"):
        assert f"kd_tutorial.{above}" not in _reached(graph, "kd_tutorial.flops"), f"flops reaches {above}"
    for reader in ("cli", "estimates", "benchmark"):  # a report's checks; distill's projection; a report's own
        assert "kd_tutorial.bench_reports" in graph[f"kd_tutorial.{reader}"], reader
    from kd_tutorial import bench_reports, flops
    moved = {n for n, v in vars(bench_reports).items() if getattr(v, "__module__", None) == bench_reports.__name__}
    assert {"read_report", "time_estimate", "project"} <= moved and not moved & set(vars(flops)), moved & set(vars(flops))
    assert not hasattr(flops, "RESULTS_DIR")  # one name, one place: no shim left behind
