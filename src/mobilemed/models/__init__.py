from mobilemed.models.build import MobileNetClassifier, build_model
from mobilemed.models.registry import BACKBONES, get_backbone

__all__ = ["BACKBONES", "MobileNetClassifier", "build_model", "get_backbone"]
