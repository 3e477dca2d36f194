"""The house rules, checked on the source: the layers' arrows point down, commands reach targets only through the
registry, one module makes onnxruntime sessions, no module is too long, and no file cites documents outside the
repository. The README's architecture section draws the same layers."""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest
from conftest import REPO

# Bottom to top; a module may import its own layer and the layers below (README.md, "Architecture").
LAYERS = [
    {"edgeq.errors"},
    {"edgeq.data", "edgeq.measure", "edgeq.scale", "edgeq.tflite_format"},
    {"edgeq.io"},
    {"edgeq.reference", "edgeq.quantization"},
    {"edgeq.passes"},
    {"edgeq.calibration"},
    {"edgeq.pipeline"},
    {"edgeq.mixed"},
    {"edgeq.targets"},
    {"edgeq.reports"},
    {"edgeq.api", "edgeq"},
    {"edgeq.cli"},
]
# What commands may import of the targets: the registry and the protocol, never a concrete target.
TARGET_INTERFACE = {"edgeq.targets", "edgeq.targets.target"}
COMMAND_PACKAGES = ("edgeq.reports", "edgeq.api", "edgeq.cli")
SOURCE_ROOTS = {"edgeq": "edgeq", "passes": "edgeq.passes", "targets": "edgeq.targets"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the installed package."""
    modules = {}
    for folder, package in SOURCE_ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every edgeq module NAME imports, at any depth of its code (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("edgeq"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeq"):
            for alias in node.names:  # `from edgeq import targets` imports the module edgeq.targets
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    found.discard(name)
    return found


def _layer(module: str) -> int:
    matches = [
        (len(package), index)
        for index, packages in enumerate(LAYERS)
        for package in packages
        if module == package or (package != "edgeq" and module.startswith(package + "."))
    ]
    assert matches, f"{module} is in no layer: add its package to LAYERS and to the README's picture"
    return max(matches)[1]


def test_every_arrow_points_down():
    upward = [
        f"{module} (layer {_layer(module)}) imports {imported} (layer {_layer(imported)})"
        for module, path in MODULES.items()
        for imported in sorted(_imports(module, path))
        if _layer(imported) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_packages_import_each_other_without_cycles():
    """Within and across layers, the sub-packages form a directed acyclic graph."""

    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:3] if parts[1:2] == ["targets"] and len(parts) > 2 else parts[:2])

    order = graphlib.TopologicalSorter()
    for module, path in MODULES.items():
        for imported in _imports(module, path):
            if package(imported) != package(module):
                order.add(package(module), package(imported))
    order.prepare()  # raises CycleError on a cycle


def test_commands_reach_targets_only_through_the_registry():
    concrete = [
        f"{module} imports {imported}"
        for module, path in MODULES.items()
        if module.startswith(COMMAND_PACKAGES)
        for imported in _imports(module, path)
        if imported.startswith("edgeq.targets") and imported not in TARGET_INTERFACE
    ]
    assert not concrete, "\n".join(concrete)


def test_tflite_micro_builds_on_tflite_never_the_reverse():
    tflite = [m for m in MODULES if m.startswith("edgeq.targets.tflite.") or m == "edgeq.targets.tflite"]
    assert not [m for m in tflite if any(i.startswith("edgeq.targets.tflm") for i in _imports(m, MODULES[m]))]
    tflm = [m for m in MODULES if m.startswith("edgeq.targets.tflm")]
    assert any(i.startswith("edgeq.targets.tflite") for m in tflm for i in _imports(m, MODULES[m]))


def test_one_module_makes_onnxruntime_sessions():
    python = [p for root in ("edgeq", "passes", "targets", "benchmarks", "models", "tests") for p in (REPO / root).rglob("*.py")]
    makers = sorted(
        str(p.relative_to(REPO)) for p in python if p != Path(__file__) and "InferenceSession(" in p.read_text()
    )
    assert makers == ["edgeq/io/session.py"]


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_tflite_lowering_is_one_module_per_op_family():
    """Every ONNX op type is lowered by exactly one module of targets/tflite/lower/, each family module lowers
    some, and no module holds the whole lowering again."""
    import edgeq.targets.tflite.lower  # noqa: F401  (imports every family module)
    from edgeq.targets.tflite.lower.registry import lowered_op_types, lowering_for

    modules = {lowering_for(op_type).__module__ for op_type in lowered_op_types()}
    assert all(m.startswith("edgeq.targets.tflite.lower.") for m in modules)
    assert len(modules) >= 8 and max(len(MODULES[m].read_text().splitlines()) for m in modules) < 250
    assert not (REPO / "targets" / "tflite" / "lower.py").exists()


CITATIONS = re.compile(r"TFLITE_FACTS|DESIGN\.md|\.\./shared/(?!corpus)|/work/shared")


@pytest.mark.parametrize("suffix", [".py", ".md", ".toml", ".txt", ".json", ""])
def test_nothing_cites_documents_outside_the_repository(suffix):
    tracked = [
        p
        for p in REPO.rglob(f"*{suffix}")
        if p.is_file() and not {".git", ".venv", "out", "__pycache__"} & set(p.relative_to(REPO).parts)
        and (suffix or p.name in ("Makefile", "run"))
    ]
    citing = [str(p.relative_to(REPO)) for p in tracked if p != Path(__file__) and CITATIONS.search(p.read_text())]
    assert not citing, citing
