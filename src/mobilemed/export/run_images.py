"""A run's own images of one split, as its model reads them: for int8 calibration and parity checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilemed import run_files
from mobilemed.run_config import read_config
from mobilemed.errors import MobilemedError
from mobilemed.spec import ModelSpec


def run_split_images(run_dir, split: str, spec: ModelSpec, *, progress: bool = False,
                     limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, S, S[, C]) uint8, labels) of `split` as recorded in the run's split.csv.

    The data is found through the run's config.yaml and must still be where training read it; the saved
    split (not a fresh one) decides which images belong to `split`, so calibration never sees test images.
    limit: at most this many images, a seeded class-stratified-by-chance sample."""
    from mobilemed.data.cache import decoded_images
    from mobilemed.data.sources import DataOptions, load_table
    from mobilemed.data.splits import apply_saved_split

    run_dir = Path(run_dir)
    config, split_file = read_config(run_dir), run_dir / run_files.SPLIT
    if config is None or not split_file.is_file():
        raise MobilemedError(f"{run_dir} has no config.yaml and split.csv; export a best.pt that lives in "
                             "the run folder `mobilemed train` wrote")
    options = DataOptions(**config["data_options"])
    table = apply_saved_split(load_table(config["data"], options), split_file)
    if table is None:
        raise MobilemedError(f"the data {config['data']!r} no longer matches {split_file}; run export where "
                             "the training data is reachable as it was")
    part = table.split(split)
    if len(part) == 0:
        raise MobilemedError(f"{run_dir}: the run has no {split} split")
    if limit and len(part) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(part), limit, replace=False))
        part = part.subset(pick)
    images, keep = decoded_images(part, spec.image_size, skip_bad=True, progress=progress,
                                  use_voi=spec.dicom_voi)
    return np.asarray(images), part.labels[keep]
