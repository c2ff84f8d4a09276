"""Load a Lambda's app.py as a fresh module (each Lambda folder has its own app.py)."""

import importlib.util
from pathlib import Path

LAMBDAS = Path(__file__).resolve().parents[1] / "lambdas"


def load_lambda(name: str):
    spec = importlib.util.spec_from_file_location(f"lambda_{name}_app", LAMBDAS / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
