"""The audit's findings as plain data (to_dict for JSON) and as a readable text summary."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ImageGroup:
    """Rows showing the same image: identical content (distance 0) or pHashes within `distance` bits."""

    paths: list[str]
    splits: list[str]
    labels: list[str]
    distance: int = 0

    @property
    def crosses_splits(self) -> bool:
        return len({s for s in self.splits if s}) > 1

    @property
    def labels_disagree(self) -> bool:
        return len(set(self.labels)) > 1


@dataclass
class AuditReport:
    """What an audit found. `checks` names the checks that ran; the others' fields stay empty."""

    source: str
    num_images: int
    task: str
    class_names: list[str]
    groups_known: bool
    checks: list[str]
    hash_name: str = ""
    counts: dict | None = None  # data.splits.split_summary
    image_stats: dict | None = None  # sizes / modes / bit_depths -> count
    unreadable: list[dict] = field(default_factory=list)  # {"path", "error"}
    exact_duplicates: list[ImageGroup] = field(default_factory=list)
    near_duplicates: list[ImageGroup] = field(default_factory=list)
    near_duplicate_distance: int | None = None
    patients_across_splits: dict[str, list[str]] = field(default_factory=dict)
    label_conflicts: list[ImageGroup] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def duplicates_across_splits(self) -> list[ImageGroup]:
        return [g for g in self.exact_duplicates + self.near_duplicates if g.crosses_splits]

    @property
    def has_leakage(self) -> bool:
        """Patients, identical or near-identical images in more than one split."""
        return bool(self.patients_across_splits or self.duplicates_across_splits)

    @property
    def is_clean(self) -> bool:
        return not (self.has_leakage or self.label_conflicts or self.unreadable)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["summary"] = {"unreadable": len(self.unreadable), "exact_duplicate_groups": len(self.exact_duplicates),
                           "near_duplicate_groups": len(self.near_duplicates),
                           "duplicate_groups_across_splits": len(self.duplicates_across_splits),
                           "patients_across_splits": len(self.patients_across_splits),
                           "label_conflicts": len(self.label_conflicts)}
        data.update(has_leakage=self.has_leakage, is_clean=self.is_clean, verdict=self.verdict())
        return data

    def write(self, json_path) -> tuple[Path, Path]:
        """json_path (to_dict) and the same name with .txt (format_text), each written atomically."""
        import json

        from mobilemed.fsutil import atomic_write

        json_path = Path(json_path)
        with atomic_write(json_path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=2)
        with atomic_write(json_path.with_suffix(".txt"), "w") as handle:
            handle.write(self.format_text())
        return json_path, json_path.with_suffix(".txt")

    def format_text(self, examples: int = 5) -> str:
        """A readable summary; sections appear only for the checks that ran."""
        lines = []
        if self.counts is not None:
            lines += [f"Audit of {self.source or 'data'}: {self.num_images} images, {self.task} task "
                      f"({len(self.class_names)} classes), {self.seconds:.1f} s", ""]
            lines += format_counts(self.counts, self.class_names) + [""]
        if self.image_stats is not None:
            lines.append("Images: " + "; ".join(f"{name.replace('_', ' ')} " + ", ".join(
                f"{key} ({n})" for key, n in values.items()) for name, values in self.image_stats.items()))
        if "images" in self.checks:
            lines.append(f"Unreadable files: {len(self.unreadable) or 'none'}")
            lines += [f"  {item['path']}: {item['error']}" for item in self.unreadable[:examples]]
        lines += self._duplicate_lines(examples)
        lines += self._patient_lines(examples)
        if "label_conflicts" in self.checks:
            lines += _group_lines("Label conflicts (same image, different labels)", self.label_conflicts,
                                  examples, self._root())
        if self.counts is not None:
            lines += ["", self.verdict()]
        return "\n".join(lines) + "\n"

    def verdict(self) -> str:
        problems = []
        if self.patients_across_splits:
            problems.append(f"{len(self.patients_across_splits)} patients in more than one split")
        if self.duplicates_across_splits:
            problems.append(f"{len(self.duplicates_across_splits)} duplicate images across splits")
        if self.label_conflicts:
            problems.append(f"{len(self.label_conflicts)} label conflicts")
        if self.unreadable:
            problems.append(f"{len(self.unreadable)} unreadable files")
        head = "LEAKAGE" if self.has_leakage else "PROBLEMS" if problems else "CLEAN"
        text = f"{head}: " + ("; ".join(problems) if problems else "no leakage, label conflicts or unreadable files")
        within = len(self.exact_duplicates) + len(self.near_duplicates) - len(self.duplicates_across_splits)
        if within:  # not leakage, but those images weigh double in training and in the metrics
            text += f" (note: {within} duplicate groups within a split)"
        return text

    def _duplicate_lines(self, examples: int) -> list[str]:
        lines, root = [], self._root()
        if "exact_duplicates" in self.checks:
            title = "Exact duplicates (same content)"
            if "images" not in self.checks:  # the cheap training check hashes only cross-split candidates
                title = "Identical images across splits"
            lines += _group_lines(title, self.exact_duplicates, examples, root)
        if "near_duplicates" in self.checks:
            title = f"Near duplicates ({self.hash_name}, distance <= {self.near_duplicate_distance})"
            lines += _group_lines(title, self.near_duplicates, examples, root)
        return lines

    def _patient_lines(self, examples: int) -> list[str]:
        if "patients" not in self.checks:
            return []
        if not self.groups_known:
            return ["Patients in more than one split: not checked (no patient / group column)"]
        crossing = self.patients_across_splits
        lines = [f"Patients in more than one split: {len(crossing) or 'none'}"]
        return lines + [f"  patient {g}: {', '.join(s)}" for g, s in list(crossing.items())[:examples]]

    def _root(self) -> Path | None:
        source = Path(self.source) if self.source else None
        return source if source is None or source.is_dir() else source.parent


def format_counts(counts: dict, class_names: list[str]) -> list[str]:
    """Rows = images / patients / each class ("count (prevalence%)"), columns = splits."""
    splits = list(counts)
    rows = [["", *splits], ["images", *(str(counts[s]["images"]) for s in splits)]]
    if all("patients" in counts[s] for s in splits):
        rows.append(["patients", *(str(counts[s]["patients"]) for s in splits)])
    for name in class_names:
        cells = [counts[s]["classes"][name] for s in splits]
        rows.append([name, *(f"{c['count']} ({100 * c['prevalence']:.1f}%)" for c in cells)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                             for c, (cell, w) in enumerate(zip(row, widths))) for row in rows]


def _group_lines(title: str, groups: list[ImageGroup], examples: int, root: Path | None) -> list[str]:
    if not groups:
        return [f"{title}: none"]
    crossing = sum(g.crosses_splits for g in groups)
    lines = [f"{title}: {len(groups)} groups ({sum(len(g.paths) for g in groups)} images), {crossing} across splits"]
    shown = sorted(groups, key=lambda g: not g.crosses_splits)[:examples]  # cross-split groups first
    for group in shown:
        members = ", ".join(f"{_short(p, root)} [{s or '-'}: {label}]"
                            for p, s, label in zip(group.paths, group.splits, group.labels))
        lines.append(f"  {members}" + (f" (distance {group.distance})" if group.distance else ""))
    return lines


def _short(path: str, root: Path | None) -> str:
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return path
