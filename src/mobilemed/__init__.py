"""mobilemed: medical image classification with MobileNet, offline-first and fast on CPU."""
from mobilemed.spec import ModelSpec

__version__ = "0.1.0"
__all__ = ["ModelSpec", "__version__"]
