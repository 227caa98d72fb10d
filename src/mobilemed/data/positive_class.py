"""The positive class of a binary task is the finding: class_names are [negative, positive], so every
sensitivity, specificity, PPV and NPV describes detecting the finding, never detecting "normal".

Order, first rule that applies:
1. --positive-class NAME (exact, else case-insensitive);
2. the source's own clinical finding (MedMNIST sets, data/medmnist_source.py, come already ordered);
3. a class named like "normal" (normal, no finding, benign, negative, healthy, control, "0_normal",
   "normal, benign", "no_tumor", "non-covid", 0/false/no) is the negative one when the other is not;
4. otherwise the sorted order stands, and a warning names the class taken as positive and the flag.
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)

NEGATIVE_NAMES = {"normal", "no finding", "nofinding", "benign", "negative", "neg", "healthy", "control",
                  "controls", "none", "no", "false", "0", "notumor", "nodisease"}
_NEGATIVE_PREFIXES = ("no ", "non ", "not ")  # "no tumor", "non covid", "not referable"


def looks_negative(name: str) -> bool:
    """True for a class name that says "nothing found" (see the module docstring)."""
    text = name.strip().lower()
    if text in NEGATIVE_NAMES:
        return True
    text = re.sub(r"^\d+[\s_.\-]+", "", text)  # "0_normal", "1-abnormal": an ordering prefix
    text = " ".join(re.sub(r"[_\-]+", " ", text).split())
    parts = [p.strip() for p in re.split(r"[,/&+;]| and ", text) if p.strip()]  # "normal, benign"
    return bool(parts) and all(p in NEGATIVE_NAMES or p.startswith(_NEGATIVE_PREFIXES) for p in parts)


def class_index(class_names: list[str], name: str) -> int | None:
    """Index of `name` among class_names: the exact name, else the one name equal ignoring case."""
    if name in class_names:
        return class_names.index(name)
    folded = [i for i, n in enumerate(class_names) if n.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def order_binary_classes(table: ImageTable, positive_class: str | None = None) -> ImageTable:
    """The table with class_names [negative, positive] (labels flipped to match when needed)."""
    if table.task != "binary":
        if positive_class:
            raise MobilemedError(f"--positive-class applies to binary tasks; {table.source} is a {table.task} "
                                 f"task with classes {', '.join(table.class_names)}")
        return table
    if positive_class:
        positive = class_index(table.class_names, positive_class)
        if positive is None:
            raise MobilemedError(f"--positive-class {positive_class!r} is not a class of {table.source}; "
                                 f"its classes are: {', '.join(table.class_names)}")
    else:
        positive = default_positive(table.class_names)
    if positive == 1:
        return table
    return replace(table, class_names=table.class_names[::-1], labels=1 - table.labels)


def default_positive(class_names: list[str]) -> int:
    """Index of the finding by name; ambiguous pairs keep index 1 and say so."""
    negative = [looks_negative(n) for n in class_names]
    if negative.count(True) == 1:
        return negative.index(False)
    why = "both look like" if all(negative) else "neither looks like"
    log.warning("positive class is %r (sensitivity, PPV ... describe detecting it): of %s, %s a 'normal' class; "
                "choose with --positive-class NAME", class_names[1], " and ".join(map(repr, class_names)), why)
    return 1
