"""An ensemble (train --ensemble N, or --cv K --cv-ensemble): classifiers of one spec whose probabilities are
averaged.

forward returns logits whose sigmoid (binary, multilabel) or softmax (multiclass) is the members' mean
probability, so every consumer of logits (predict, evaluate, the spec's temperature and thresholds, the ONNX
graph) reads an ensemble like one network. The OOD detector reads the first member's features
(features_and_logits, feature_network); Grad-CAM averages the members' maps (explain/gradcam.py). Code
that asks for one network's `backbone` is refused with a message naming what to use instead.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mobilemed.errors import MobilemedError

NOT_ONE_NETWORK = ("this model is an ensemble (train --ensemble or --cv-ensemble) of {k} networks and has no one "
                   "backbone: use .members[i].backbone, or .feature_network for the features the OOD check reads")


class EnsembleClassifier(nn.Module):
    """members: classifiers mapping (B, C, H, W) to (B, num_outputs) logits; task: the spec's task."""

    def __init__(self, members: list[nn.Module], task: str):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs) logits
        return self._mean_probability(torch.stack([member(x) for member in self.members]))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, D) features of the first member, (B, num_outputs) ensemble logits) in one pass of each member.

        The OOD check asks whether an image lies where the training images' features lie; the members were
        trained on the same images (--cv-ensemble's folds: on most of them), so one member's feature space
        answers it as well as any: the first's."""
        features, first = self.members[0].features_and_logits(x)
        rest = [member(x) for member in self.members[1:]]
        return features, self._mean_probability(torch.stack([first, *rest]))

    @property
    def feature_network(self) -> nn.Module:
        """The first member's backbone: the feature space of the OOD detector (features_and_logits)."""
        return self.members[0].feature_network

    def _mean_probability(self, z: torch.Tensor) -> torch.Tensor:  # (K, B, O) member logits -> (B, O)
        log_k = math.log(len(self.members))
        if self.task == "multiclass":  # log of the mean softmax: softmax of it is the mean probability
            return torch.logsumexp(torch.log_softmax(z, dim=-1), dim=0) - log_k
        # logit of the mean sigmoid, as log(mean p) - log(mean (1 - p)) without overflow
        log_p = torch.logsumexp(nn.functional.logsigmoid(z), dim=0) - log_k
        log_q = torch.logsumexp(nn.functional.logsigmoid(-z), dim=0) - log_k
        return log_p - log_q

    @property
    def backbone(self):
        raise MobilemedError(NOT_ONE_NETWORK.format(k=len(self.members)))
