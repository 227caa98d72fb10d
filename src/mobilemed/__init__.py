"""mobilemed: medical image classification with MobileNet, offline-first and fast on CPU.

The Python API mirrors the CLI one to one: `from mobilemed.api import train, evaluate, predict, explain, audit,
export, load_model` (see mobilemed.api). train, evaluate, predict, audit and load_model are also attributes of
the package, imported on first use so `import mobilemed` stays light; `mobilemed.explain` and
`mobilemed.export` are the subpackages of those names, so their functions are taken from mobilemed.api.
"""
from mobilemed.errors import MobilemedError
from mobilemed.spec import ModelSpec

__version__ = "0.1.0"
API = ("train", "evaluate", "predict", "audit", "load_model")
__all__ = ["ModelSpec", "MobilemedError", "__version__", *API]


def __getattr__(name: str):
    if name in API:
        from mobilemed import api

        return getattr(api, name)
    raise AttributeError(f"module 'mobilemed' has no attribute {name!r}")
