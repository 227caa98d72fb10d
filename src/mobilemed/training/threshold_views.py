"""--threshold-views V: choose the operating point on V augmented views of every validation image.

Why: a validation split carved from the training data is in-distribution, and a fine-tuned model is at its
most confident there (Kermany: validation AUROC 0.993-0.995, 0.975-0.978 on the test folder, taken from other
patients at another time). On those plain images the J-optimal threshold is set by the few hardest validation
images, and it is the threshold of a world without acquisition changes. Seeing each validation image the way
the training augmentation draws it (random crops, exposure and contrast, the light affine: the framing and
exposure differences another site or machine brings) and pooling the views gives, for every threshold t, the
validation J averaged over those changes: the sensitivity and false-positive rate of the pooled views are the
means of the per-view ones. The threshold rule then runs on the pooled views; the youden plateau's standard
error still counts images, not views (choose_thresholds' `views`), so it is never narrower than on the plain
images. The deployed model still predicts on the plain image: the views only move where its cut sits.

The views are those of the run's own augmentation (optim.augmentation, the same draw as the training's
batches), seeded by the run's seed, so a rerun or a resumed run chooses the same threshold. Under --cv every
fold model scores its own held-out images' views (cross_validation.py), so the pooled out-of-fold views play
the part of validation as the plain out-of-fold predictions do. The views' logits are saved in the run folder
(threshold_views.npz), so scripts/rescore_operating_point.py can re-choose without the model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mobilemed.batch_predict import shifted_views
from mobilemed.fsutil import atomic_write
from mobilemed.spec import ModelSpec
from mobilemed.training.features import CHUNK, augmented_chunks

VIEWS_FILE = "threshold_views.npz"  # (V, N, outputs) logits of the validation (or out-of-fold) views
VIEW_SEED_OFFSET = 500_009  # the views' draws are not the training batches' or the prefix cache's draws


@torch.inference_mode()
def view_logits(model: torch.nn.Module, images: np.ndarray, spec: ModelSpec, augmentation, *, views: int,
                seed: int, progress: bool = False) -> np.ndarray:
    """(views, N, outputs) float32 logits of the eval-mode `model` on `views` augmented copies of each image
    (under spec.tta each copy's logits are averaged over its shifted copies, as predict_logits does)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.empty((views, len(images), spec.num_outputs), np.float32)
    for view in tqdm(range(views), desc="threshold views", unit="view", disable=not progress):
        start = 0
        for x in augmented_chunks(images, spec, seed + VIEW_SEED_OFFSET, view, augmentation, size=CHUNK):
            batch = torch.from_numpy(x).to(device)
            copies = shifted_views(batch) if spec.tta else [batch]
            logits = torch.stack([model(c.contiguous(memory_format=torch.channels_last)) for c in copies]).mean(0)
            out[view, start:start + len(x)] = logits.float().cpu().numpy().reshape(len(x), -1)
            start += len(x)
    return out


def pooled(labels: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels repeated once per view, the views' logits stacked): rows for the threshold rule."""
    views = logits.shape[0]
    return np.concatenate([labels] * views), logits.reshape(-1, *logits.shape[2:])


def save_views(folder: Path, logits: np.ndarray, labels: np.ndarray) -> None:
    with atomic_write(Path(folder) / VIEWS_FILE, "wb") as handle:
        np.savez(handle, logits=logits, labels=labels)


def read_views(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(logits, labels) saved by save_views, or None when the folder has none."""
    path = Path(folder) / VIEWS_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return saved["logits"], saved["labels"]
