"""docread's import structure, read from the source (AST) without importing it: no cycles, benchmarks and
training apart, fixtures off the runtime path, and `import docread.train` free of torch."""

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "docread"


def _modules() -> dict[str, Path]:
    """docread's modules by dotted name (a package by its own name, from its __init__.py)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The deepest docread module a dotted name lies in (`docread.train.config.TrainConfig`: `docread.train.config`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported_names(path: Path, module: str, *, types: bool = False):
    """Every docread name `path` imports, at import time or inside functions; under TYPE_CHECKING too
    with `types` (annotations only: never executed, but still a dependency of the reader's mind)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    stack = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while stack:
        node = stack.pop()
        if _is_type_checking(node) and not types:
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _imports(module: str, *, types: bool = False) -> set[str]:
    """The docread modules `module` imports (type-only imports too with `types`)."""
    names = _imported_names(MODULES[module], module, types=types)
    found = {_resolve(name) for name in names if name.startswith("docread")}
    return found - {None, module}


@functools.cache
def graph(*, types: bool = False) -> dict[str, set[str]]:
    """Each module's docread imports (type-only ones too with `types`): read when a test needs them, not
    when the module is collected (every pytest-xdist worker collects every module)."""
    return {module: _imports(module, types=types) for module in MODULES}


# The layers in the order the data flows (docs/layout.md shows this table): a module imports only modules of
# lower rank, or of its own package. The first matching prefix (longest first) gives a module's rank.
RANKS = {
    "docread.errors": 0,
    "docread.intake": 1,
    "docread.nn": 1,
    "docread.events": 1,
    "docread.settings": 2,
    "docread.model": 3,
    "docread.views": 4,
    "docread.generate": 4,
    "docread.generate.sizing": 4,  # how many sequences decode at once: ask, batch, bench and serve size with it
    "docread.jsonlines": 4,
    "docread.formats": 5,
    "docread.records": 5,
    "docread.results": 6,
    "docread.text": 7,
    "docread.pagecalls": 8,
    "docread.manycalls": 8,
    "docread.textcalls": 8,
    "docread.reader": 9,
    "docread.remote": 9,
    "docread.pagework": 10,  # pages' questions answered, pairs decoded in batches: under document and batch/
    "docread.loading": 11,
    "docread.document": 11,
    "docread.pagecache": 12,
    "docread.reading": 12,
    "docread.inspection": 12,
    "docread.extract": 13,
    "docread.chat": 13,
    "docread.testing": 14,
    "docread.batch": 14,
    "docread": 14,  # the package's lazy facade (docread.load, docread.ask_document, ...): above what it offers
    "docread.bench": 15,
    "docread.train": 15,
    "docread.serve": 16,
    "docread.mcp": 16,
    "docread.cli": 17,
    "docread.__main__": 18,
}


def _rank_key(module: str) -> str | None:
    """The RANKS entry that `module` falls under (the longest matching prefix)."""
    matches = [k for k in RANKS if module == k or module.startswith(k + ".")]
    return max(matches, key=len) if matches else None


def _cycle() -> list[str] | None:
    """One import cycle among docread's modules, as a path that ends where it starts; None without."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph()[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph()):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_walk_sees_known_imports():
    assert "docread.train.config" in graph()["docread.train.loop"]
    assert "docread.formats.entitygrid" in graph()["docread.train.data"]
    assert "docread.testing" in graph()["docread.bench.speedsetup"]  # a deferred import, inside a function


def test_every_module_has_a_rank():
    assert not sorted(m for m in MODULES if _rank_key(m) is None), "add new modules to RANKS"


def test_imports_point_down_only_type_only_imports_included():
    """A module imports only lower layers (or its own package): no stage reaches into a later one, not even
    for an annotation (types that lower layers use live in lower layers)."""
    upward = sorted(
        f"{m} ({RANKS[_rank_key(m)]}) -> {t} ({RANKS[_rank_key(t)]})"
        for m, targets in graph(types=True).items()
        for t in targets
        if _rank_key(t) != _rank_key(m) and RANKS[_rank_key(t)] >= RANKS[_rank_key(m)]
    )
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_the_rank_walk_sees_type_only_imports():
    assert "docread.results" in graph(types=True)["docread.text.evidence"]  # DocumentAnswer, under TYPE_CHECKING
    assert "docread.results" not in graph()["docread.text.evidence"]


def test_no_import_cycle_among_docread_modules():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package, other", [("docread.bench", "docread.train"), ("docread.train", "docread.bench")])
def test_bench_and_train_do_not_import_each_other(package, other):
    crossing = sorted(
        f"{m} -> {t}"
        for m, targets in graph().items()
        if m == package or m.startswith(package + ".")
        for t in targets
        if t == other or t.startswith(other + ".")
    )
    assert not crossing, f"{package} imports {other}; share through docread.formats instead: {crossing}"


def test_fixtures_stay_off_the_runtime_path():
    """Only benchmarks (`docread bench speed --synthetic`) may build random models; tests and scripts/ aside."""
    users = sorted(m for m, targets in graph().items() if "docread.testing" in targets)
    assert all(m.startswith("docread.bench.") for m in users), users


def test_research_drivers_live_outside_the_package():
    assert not (PACKAGE / "bench" / "experiment.py").exists()
    driver = ROOT / "scripts" / "entitygrid_experiment.py"
    assert driver.is_file()
    assert not any(name.startswith("scripts") for name in _imported_names(driver, "scripts.entitygrid_experiment"))


def test_importing_training_or_its_config_loads_no_torch():
    code = "import sys, docread.train, docread.train.config, docread.formats.entitygrid; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_every_method_anchor_the_code_cites_exists():
    import re

    def anchor(heading: str) -> str:  # GitHub's rule: lower case, punctuation dropped, spaces to hyphens
        return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")

    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    anchors = {anchor(line.lstrip("#")) for line in method.splitlines() if line.startswith("## ")}
    cited = {}
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        for name in re.findall(r"docs/method\.md#([a-z0-9-]+)", path.read_text(encoding="utf-8")):
            cited.setdefault(name, path.name)
    assert cited, "the code cites docs/method.md"
    assert not {k: v for k, v in cited.items() if k not in anchors}, sorted(anchors)


def test_pyproject_lists_every_package_of_the_source_tree():
    """A non-editable install ships only the listed packages: a new subpackage must be added there."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(config["packages"]) - {"docread._presets"} == packages
    assert config["package-dir"]["docread._presets"] == "models"
