"""How much of a Grad-CAM heatmap lies on the image's edge, where laterality markers, text and film borders sit.

A chest X-ray model can score a hospital's marker, a burned-in label or the film's border instead of the lungs
(Zech et al., PLoS Med 2018; DeGrave et al., Nat Mach Intell 2021). Heat gathered on the edge is the sign a
reader should look for, so the gallery, the report and `mobilemed explain` state it for every heatmap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EDGE_BAND = 0.125  # the outer eighth of the image on every side


def band_area(band: float = EDGE_BAND) -> float:
    """The band's share of the image's area (0.4375 for an eighth on every side): a flat heatmap's share."""
    return 1.0 - (1.0 - 2.0 * band) ** 2


@dataclass(frozen=True)
class EdgeHeat:
    share: float         # the fraction of the heatmap's total heat inside the band
    peak_at_edge: bool   # the band holds the heatmap's maximum and the interior does not (a flat map: False)

    def to_dict(self) -> dict:
        return {"edge_heat": round(self.share, 4), "peak_at_edge": self.peak_at_edge}


def edge_heat(heatmap: np.ndarray, band: float = EDGE_BAND) -> EdgeHeat:
    """EdgeHeat of one (H, W) non-negative heatmap. An all-zero map (nothing drove the score) has share 0."""
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap is (H, W); got shape {heat.shape}")
    rows, cols = heat.shape
    top, left = int(round(band * rows)), int(round(band * cols))
    if not (0 < top and 2 * top < rows and 0 < left and 2 * left < cols):
        raise ValueError(f"a {rows}x{cols} heatmap has no edge band of {band:.0%} and an interior")
    inside = np.zeros(heat.shape, dtype=bool)
    inside[top:rows - top, left:cols - left] = True
    total = heat.sum()
    share = float(heat[~inside].sum() / total) if total > 0 else 0.0
    return EdgeHeat(share, bool(heat[~inside].max() > heat[inside].max()))


def describe_edge_heat(entries: list[dict]) -> str:
    """One sentence on a gallery's heatmaps ({"edge_heat", "peak_at_edge"} per entry), "" when none has them."""
    measured = [e for e in entries if isinstance(e.get("edge_heat"), (int, float))]
    if not measured:
        return ""
    shares, peaks = [e["edge_heat"] for e in measured], sum(bool(e.get("peak_at_edge")) for e in measured)
    text = (f"Heat on the edge (the outer eighth of the image on every side, {band_area():.0%} of its area, "
            f"where laterality markers, text and film borders sit): {np.mean(shares):.0%} of the heat on average "
            f"(a flat map: {band_area():.0%}); {peaks} of {len(shares)} heatmaps peak there.")
    if peaks:
        text += (" Look at those: a model that scores markers or borders has learned the site or the machine, "
                 "not the disease, and will fail elsewhere.")
    return text
