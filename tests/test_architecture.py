"""The dependency direction of STYLE.md, held by parsing imports."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mobilemed"
# module (or package) -> packages it must never import
FORBIDDEN = {
    "spec": {"torch", "numpy", "mobilemed"},
    "ood": {"torch", "mobilemed"},  # numpy only: a torch-free (ONNX Runtime) path scores with it too
    "io": {"torch", "mobilemed.data", "mobilemed.models", "mobilemed.training", "mobilemed.evaluation",
           "mobilemed.cli", "mobilemed.inference", "mobilemed.explain"},
    "data": {"mobilemed.models", "mobilemed.training", "mobilemed.evaluation", "mobilemed.cli",
             "mobilemed.inference", "mobilemed.explain", "mobilemed.checkpoint"},
    "models": {"mobilemed.data", "mobilemed.training", "mobilemed.evaluation", "mobilemed.cli",
               "mobilemed.inference", "mobilemed.explain"},
    "evaluation": {"torch", "mobilemed.training", "mobilemed.cli", "mobilemed.inference", "mobilemed.models"},
    "explain": {"mobilemed.training", "mobilemed.cli", "mobilemed.evaluation"},
    "checkpoint": {"mobilemed.training", "mobilemed.cli", "mobilemed.data"},
    "inference": {"mobilemed.training", "mobilemed.cli"},
    "training": {"mobilemed.cli"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files_of(unit: str) -> list[Path]:
    folder = PACKAGE / unit
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{unit}.py"]


@pytest.mark.parametrize("unit", sorted(FORBIDDEN))
def test_dependency_direction(unit):
    offenders = []
    for file in files_of(unit):
        for name in imports_of(file):
            for banned in FORBIDDEN[unit]:
                if name == banned or name.startswith(banned + "."):
                    offenders.append(f"{file.relative_to(PACKAGE)} imports {name}")
    assert not offenders, offenders


def test_files_stay_small():
    too_long = {str(f.relative_to(PACKAGE)): n for f in PACKAGE.rglob("*.py")
                if (n := len(f.read_text().splitlines())) > 400}
    assert not too_long, too_long
