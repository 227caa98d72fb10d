"""Folder conventions of published image sets: which folders are splits, which are classes, and which
files in a class folder are not images of that class.

Read without a question:
    root/<class>/...            class folders; the splits are made later
    root/<split>/<class>/...    split folders under their common names, any case (Training/, TEST/, valid/)
Stopped with a message that shows what was found and names the flag that settles it:
    split folders beside other folders (Kaggle's chest_xray/ holds train/ test/ val/ and a second chest_xray/)
    two folders for one split (train/ and training/), split folders with different class folders,
    split folders that hold images instead of class folders (labels then come from a table: --labels),
    a single wrapper folder (chest_xray/chest_xray/train/...): pass the inner folder.
`--split-folders train=Training,test=Testing` names the split folders explicitly (paths relative to the
data folder, so train=training_set/training_set works too) and reads only those.

Split names. Recognised: train, training, trn; val, valid, validation, dev, tune; test, testing, tst, and
these followed by set/data/images ("training_set", "test_images"). Deliberately not recognised, because
published sets use them both ways: "eval"/"evaluation" (a validation set during training in TensorFlow
tradition, the final test set in challenge data), "holdout" (hold-out validation or held-out test), and
"development" (the ML dev set, or in clinical papers the development cohort, i.e. the training data).
Such a folder beside split folders stops the read and the message offers --split-folders val=eval or
test=eval; the user decides.

Masks. Segmentation sets ship masks beside images: BUSI's "benign/benign (1)_mask.png", the COVID-19
Radiography Database's "COVID/masks/". A mask is never an image of its class, so files with a mask token
in the name, or under a masks/ folder, are skipped with a warning, but only when the class folder also
holds other images: in a set whose classes are about masks ("with_mask/with_mask_1.png") every file has
the token and all are kept.

Symlinks. A symlinked class or split folder is followed (with a warning) when it points outside the data
folder; one that points into the tree or above it (a loop, or a second copy of a class) is skipped with a
warning. Symlinked folders inside a class folder are not followed.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mobilemed.errors import MobilemedError
from mobilemed.io.images import is_image_file

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "training": "train", "trn": "train",
               "val": "val", "valid": "val", "validation": "val", "dev": "val", "tune": "val",
               "test": "test", "testing": "test", "tst": "test"}
_SPLIT_SUFFIXES = {"set", "data", "images", "imgs", "img", "split"}
_MASK_TOKENS = {"mask", "masks"}
SPLITS = ("train", "val", "test")


def split_of_name(name: str) -> str | None:
    """"train" / "val" / "test" for a folder name or CSV value under a common split name, else None."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.strip().lower()) if t]
    if not tokens or any(t not in _SPLIT_SUFFIXES for t in tokens[1:]):
        return None
    first = tokens[0]
    if first not in SPLIT_NAMES and first.endswith("set"):  # trainset, testset
        first = first[:-3]
    return SPLIT_NAMES.get(first)


def parse_split_mapping(text: str, *, many_to_one: bool) -> dict[str, str]:
    """"train=Training,test=Testing" -> {"train": "Training", "test": "Testing"} (split -> name).
    many_to_one (CSV values): "test=holdout,test=external" is allowed and gives {name: split} instead."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        split, sep, name = (s.strip() for s in item.partition("="))
        if not sep or not name or split.lower() not in SPLITS:
            raise ValueError(f"{item!r} is not SPLIT=NAME with SPLIT one of train, val, test")
        pairs.append((split.lower(), name))
    if not pairs:
        raise ValueError("give at least one SPLIT=NAME pair, e.g. train=Training,test=Testing")
    if many_to_one:
        return {name.lower(): split for split, name in pairs}
    splits = [split for split, _ in pairs]
    if len(set(splits)) < len(splits):
        raise ValueError(f"each split takes one folder; {text!r} repeats one")
    return dict(pairs)


def split_folders(root: Path, explicit: dict[str, str] | None = None) -> dict[str, Path]:
    """split -> folder of class folders; {"": root} when root holds class folders directly."""
    if explicit:
        return _explicit_split_folders(root, explicit)
    folders = subfolders(root, root)
    if not folders:
        return {"": root}
    by_split: dict[str, list[Path]] = {}
    others = []
    for folder in folders:
        split = split_of_name(folder.name)
        (by_split.setdefault(split, []) if split else others).append(folder)
    if not by_split:
        _refuse_wrapper(root)
        return {"": root}
    flag = "--split-folders " + ",".join(f"{s}={by_split[s][0].name}" for s in SPLITS if s in by_split)
    if others:
        raise MobilemedError(f"{root}: cannot tell splits from classes: split folders {_names(by_split)} beside "
                             f"other folders {_list(others)}. Read only the split folders with {flag} (add e.g. "
                             f"test={others[0].name} to use another), or pass the folder that holds the data")
    doubled = {s: f for s, f in by_split.items() if len(f) > 1}
    if doubled:
        split, found = next(iter(doubled.items()))
        raise MobilemedError(f"{root}: folders {_list(found)} are all the {split} split; choose one with "
                             f"--split-folders {split}={found[0].name}")
    chosen = {split: found[0] for split, found in by_split.items()}
    _refuse_split_wrappers(root, chosen)
    return chosen


def _explicit_split_folders(root: Path, explicit: dict[str, str]) -> dict[str, Path]:
    chosen = {split: root / name for split, name in explicit.items()}
    for split, folder in chosen.items():
        if not folder.is_dir():
            raise MobilemedError(f"--split-folders {split}={explicit[split]}: {folder} is not a folder; "
                                 f"{root} holds {_list(subfolders(root, root)) or 'no folders'}")
    unused = [f.name for f in subfolders(root, root) if f not in chosen.values()]
    if unused:
        log.info("%s: --split-folders leaves out %s", root, ", ".join(unused))
    return chosen


def _refuse_wrapper(root: Path) -> None:
    """A single folder holding the data one level down (an unzipped archive): name the inner folder."""
    inner = _single_wrapped(root, root)
    if inner is not None:
        raise MobilemedError(f"{root} holds the single folder {inner.name}/ (which holds "
                             f"{_list(subfolders(inner, root))}): pass {inner} as the data folder")


def _refuse_split_wrappers(root: Path, chosen: dict[str, Path]) -> None:
    """training_set/training_set/<class>/ (a common Kaggle nesting): name the inner folders in the flag."""
    inner = {split: _single_wrapped(folder, root) for split, folder in chosen.items()}
    if any(inner.values()):
        mapping = ",".join(f"{s}={(inner[s] or chosen[s]).relative_to(root).as_posix()}" for s in SPLITS if s in chosen)
        raise MobilemedError(f"{root}: split folders {_list(list(chosen.values()))} hold a single folder each "
                             f"rather than class folders; if the classes are one level down, read them with "
                             f"--split-folders {mapping}")


def _single_wrapped(folder: Path, root: Path) -> Path | None:
    """The one folder inside `folder` when it holds nothing else but folders (a wrapper), else None."""
    inside = subfolders(folder, root)
    if len(inside) != 1 or not subfolders(inside[0], root):
        return None
    return None if any(is_image_file(p) for p in folder.iterdir() if p.is_file()) else inside[0]


def class_folders(folder: Path, root: Path, split: str = "") -> dict[str, list[str]]:
    """class name -> sorted image files (masks left out) of each class folder in `folder`."""
    classes = {}
    for class_dir in subfolders(folder, root):
        inverted = [d.name for d in subfolders(class_dir, root) if split_of_name(d.name)]
        if inverted:  # class/split instead of split/class: the labels are right, the given split is lost
            log.warning("class folder %s holds split folders (%s): read as one class and split afresh; arrange "
                        "the data as <split>/<class>/ to keep the given split", class_dir, ", ".join(inverted))
        files = class_images(class_dir)
        if not files:
            raise MobilemedError(f"class folder {class_dir} holds no images; add images or remove the folder")
        classes[class_dir.name] = files
    loose = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    if loose and not classes:
        where, skip = (f"the {split} folder {folder}", "; an unlabelled folder is left out by naming the others "
                       "with --split-folders, e.g. train=train") if split else (str(folder), "")
        raise MobilemedError(f"{where} holds {len(loose)} images but no class folders, so nothing gives their "
                             f"labels: arrange them as {folder}/<class>/image, or give a label table with --labels"
                             f"{skip}")
    if loose:
        log.warning("%s: %d images outside any class folder are not used (e.g. %s)", folder, len(loose), loose[0].name)
    return classes


def class_images(class_dir: Path) -> list[str]:
    """Image files under a class folder, without segmentation masks and without following symlinked folders."""
    files = []
    for parent, dirs, names in os.walk(class_dir):
        for name in [d for d in dirs if os.path.islink(os.path.join(parent, d))]:
            log.warning("%s: symlinked folder %s is not followed", class_dir, name)
        dirs[:] = sorted(d for d in dirs if not _ignored(d) and not os.path.islink(os.path.join(parent, d)))
        files += [Path(parent, n) for n in names if not n.startswith(".")]
    files = sorted(str(p) for p in files if p.is_file() and is_image_file(p))
    masks = [f for f in files if _is_mask(Path(f).relative_to(class_dir))]
    if masks and len(masks) < len(files):  # every file named *mask*: a class about masks, not segmentation
        log.warning("%s: skipped %d segmentation masks (e.g. %s): a mask is not an image of its class",
                    class_dir, len(masks), Path(masks[0]).name)
        skipped = set(masks)
        files = [f for f in files if f not in skipped]
    return files


def _is_mask(relative: Path) -> bool:
    folders = {p.lower() for p in relative.parts[:-1]}
    tokens = set(re.split(r"[^a-z0-9]+", relative.stem.lower()))
    return bool(folders & _MASK_TOKENS or tokens & _MASK_TOKENS)


def subfolders(folder: Path, root: Path) -> list[Path]:
    """Data folders in `folder`: hidden and archive-tool folders (.git, __MACOSX) left out, and symlinks
    followed only when they lead outside `root` (into it, or above it, would read images twice or loop)."""
    out = []
    top = root.resolve()
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or _ignored(path.name):
            continue
        if path.is_symlink():
            target = path.resolve()
            if target == top or top in target.parents or target in top.parents:
                log.warning("%s is a symlink to %s, inside the data folder or above it (a loop or a second copy): "
                            "skipped", path, target)
                continue
            log.warning("%s is a symlink to %s outside the data folder: read as a folder of the data", path, target)
        out.append(path)
    return out


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")  # .git, .ipynb_checkpoints, __MACOSX, __pycache__


def _names(by_split: dict[str, list[Path]]) -> str:
    return _list([f for s in SPLITS for f in by_split.get(s, [])])


def _list(folders: list[Path], limit: int = 8) -> str:
    names = [f"{f.name}/" for f in folders]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
