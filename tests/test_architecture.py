"""The layer map: every module on a numbered floor, imports only go down. Held by parsing every import.

An import from module A to module B is allowed when B's floor is lower than A's, or when both sit on the
same floor inside one top-level package (data.splits -> data.table). Everything else is an arrow up or
sideways, e.g. inference -> evaluation (it would pull scipy onto the deployment path) or data -> models
(through the assets package). Every import counts: module level, inside functions (lazy ones), relative
ones resolved, and `from mobilemed import assets` as the submodule it names.
A new top-level module or package needs one line in FLOORS; the test says so.
"""
import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mobilemed"

# The most specific entry names a module's floor ("assets.home" before "assets").
FLOORS = {
    "errors": 0, "spec": 0,
    "fsutil": 0.5,  # atomic writes raise the project's own error for an unusable output path
    "io": 1, "decision": 1,
    "run_files": 1,  # the run folder's file names and saved predictions: every reader imports them
    "run_config": 1.5,  # the run folder's config.yaml (yaml, so not in run_files, whose name of it it uses)
    "ood": 1,  # numpy only: the torch-free (ONNX Runtime) path scores with it too
    "assets.home": 1, "assets.index": 1, "assets.medmnist_files": 1,
    "export.metadata": 1,  # the spec inside an .onnx file: read by the torch-free path
    "explain.edge_heat": 1,  # numpy only: the gallery measures it, the report (evaluation) states it
    "data": 2, "models": 2,
    "export.quantize": 2,  # onnxruntime's int8 quantiser: used by export and by training's int8 feature pass
    "checkpoint": 3, "batch_predict": 3, "assets": 3,  # assets.weights checks files against the registry
    "predictions": 3,  # one Predictions type and its OOD flags, for the torch and the ONNX path
    "inference": 4, "onnx_model": 4,  # what a deployment runs: below everything that evaluates or explains
    "evaluation": 5, "explain": 5,
    "engines": 5,  # torch or ONNX Runtime behind one predictor
    "export.graph": 4, "export.onnx_file": 4,  # the graph and its file: what engines export in memory
    "training": 6, "export": 6, "recalibration": 6, "prediction": 6,
    "evaluate_model": 7,  # writes metrics.json with training.run_folder's writer
    "api": 8,  # the Python API: one function per command, beside the CLI  # export checks parity with evaluation's metrics
    "service": 7,
    "cli": 8,
    "__init__": 9, "__main__": 9,  # the package's public face may import from anywhere
}
# Third-party packages: what the lowest floors may import at all, and what others must never import.
ONLY = {"errors": set(), "fsutil": set(), "spec": set(), "decision": {"numpy"}, "ood": {"numpy"},
        "run_files": {"numpy"}, "export.metadata": set(), "explain.edge_heat": {"numpy"}}
NEVER = {"io": {"torch", "torchvision"}, "evaluation": {"torch", "torchvision"},
         "inference": {"scipy", "sklearn", "matplotlib", "pandas"},
         # the reading-room path: numpy, Pillow, pydicom and onnxruntime only (the test in tests/export proves
         # it at run time too)
         "onnx_model": {"torch", "torchvision", "scipy", "sklearn", "matplotlib", "pandas"},
         "predictions": {"torch", "torchvision", "scipy", "sklearn", "matplotlib", "pandas"}}


def module_name(path: Path) -> str:
    """src/mobilemed/data/table.py -> "data.table"; a package's __init__ is the package itself."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str | None = None) -> tuple[set[str], set[str]]:
    """(our modules imported, without the "mobilemed." prefix; third-party top-level names) of the file of
    module `name` (by default the package module at `path`)."""
    name, ours, theirs = name or module_name(path), set(), set()
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(["mobilemed", *package[:len(package) - node.level + 1]])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            # `from mobilemed.x import y` imports the submodule x.y when there is one, else a name of x
            targets = [f"{module}.{alias.name}" if _ours(f"{module}.{alias.name}") in MODULES else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            top = target.split(".")[0]
            if top == "mobilemed":
                ours.add(_ours(target) or "__init__")
            elif top not in sys.stdlib_module_names and top != "__future__":
                theirs.add(top)
    return ours, theirs


def _ours(target: str) -> str:
    return target.removeprefix("mobilemed").removeprefix(".")


def floor_key(module: str) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return ".".join(parts[:n])
    return None


def arrow_allowed(source: str, target: str) -> bool:
    low, high = FLOORS[floor_key(target)], FLOORS[floor_key(source)]
    return low < high or (low == high and source.split(".")[0] == target.split(".")[0])


def test_every_module_has_a_floor():
    missing = sorted({m.split(".")[0] for m in MODULES if floor_key(m) is None})
    assert not missing, [f"give module mobilemed.{m} a floor in FLOORS (tests/test_architecture.py)" for m in missing]


def test_imports_only_go_down():
    arrows = []
    for module, path in MODULES.items():
        for target in imports_of(path)[0]:
            if floor_key(module) and floor_key(target) and not arrow_allowed(module, target):
                arrows.append(f"{module} (floor {FLOORS[floor_key(module)]}) imports {target} "
                              f"(floor {FLOORS[floor_key(target)]})")
    assert not arrows, arrows


def test_the_map_catches_the_arrows_it_exists_for():
    assert not arrow_allowed("inference", "evaluation.calibration")
    assert not arrow_allowed("data.cache", "assets")  # the assets package re-exports assets.weights -> models
    assert not arrow_allowed("data.cache", "models.registry")
    assert not arrow_allowed("evaluation.report", "explain.gallery")  # sideways between packages
    assert arrow_allowed("data.cache", "assets.home") and arrow_allowed("data.splits", "data.table")


def test_relative_lazy_and_submodule_imports_are_all_seen(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from . import table\nfrom ..assets import home\n\n\ndef f():\n"
                     "    from mobilemed import models\n    import torch\n")
    ours, theirs = imports_of(probe, "data.probe")
    assert ours == {"data.table", "assets.home", "models"} and theirs == {"torch"}


@pytest.mark.parametrize("unit", sorted({*ONLY, *NEVER}))
def test_third_party_imports_per_unit(unit):
    offenders = []
    for module, path in MODULES.items():
        if module == unit or module.startswith(unit + "."):
            theirs = imports_of(path)[1]
            bad = theirs - ONLY[unit] if unit in ONLY else theirs & NEVER[unit]
            offenders += [f"{module} imports {name}" for name in sorted(bad)]
    assert not offenders, offenders


def test_every_imported_package_is_declared_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values()
                                                 for r in extra)]
    declared = {_normalise(re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0]) for r in requirements}
    distributions = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in MODULES.values():
        for name in imports_of(path)[1]:
            provided_by = {_normalise(d) for d in distributions.get(name) or [NOT_INSTALLED.get(name, name)]}
            if not provided_by & declared:
                undeclared.add(f"{name} (imported by {module_name(path)})")
    assert not undeclared, sorted(undeclared)


# Where an optional extra is not installed, its import name cannot be looked up in the environment.
NOT_INSTALLED = {"pytorch_grad_cam": "grad-cam"}


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_files_stay_small():
    too_long = {str(f.relative_to(PACKAGE)): n for f in PACKAGE.rglob("*.py")
                if (n := len(f.read_text().splitlines())) > 400}
    assert not too_long, too_long
