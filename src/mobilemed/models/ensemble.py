"""A fold ensemble (train --cv K --cv-ensemble): K classifiers of one spec whose probabilities are averaged.

forward returns logits whose sigmoid (binary, multilabel) or softmax (multiclass) is the members' mean
probability, so every consumer of logits (predict, evaluate, the spec's temperature and thresholds) reads an
ensemble like one network. What needs one network's features or gradients (the OOD detector, Grad-CAM, the
ONNX graph) is refused with a message naming the fix, through `backbone`, the attribute all of them use.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mobilemed.errors import MobilemedError

NOT_ONE_NETWORK = ("this model is a fold ensemble (train --cv-ensemble) of {k} networks: Grad-CAM, ONNX export and "
                   "the OOD check need one network; train with --cv K without --cv-ensemble for a single refitted "
                   "model")


class EnsembleClassifier(nn.Module):
    """members: classifiers mapping (B, C, H, W) to (B, num_outputs) logits; task: the spec's task."""

    def __init__(self, members: list[nn.Module], task: str):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs) logits
        z = torch.stack([member(x) for member in self.members])  # (K, B, O)
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
