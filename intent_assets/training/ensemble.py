"""The fold boosters of a cross-validated search as one booster: their average.

The small-table regime calibrates on out-of-fold margins, each from a fold booster that never
saw its row. Shipping those same boosters averaged keeps the calibrator on the margins of the
model that serves (a booster refitted on every row grows larger margins than any fold booster,
and its calibration drifts), and averaging K fits removes variance a single fit keeps, which
is what a small table needs most (docs/benchmarks.md, "Small tables").

The average is one LightGBM model: every fold's trees, each leaf value divided by K, so its raw
score is the mean of the folds' raw scores and SHAP contributions average the same way. It
loads, predicts and explains like any booster (`serving.model` needs nothing else).
"""

from __future__ import annotations

import re

import lightgbm as lgb

_TREE = re.compile(r"^Tree=\d+$", re.MULTILINE)
_END = "end of trees"


def _parts(model: str) -> tuple[str, list[str], str]:
    """A model string as (header, tree blocks, everything from "end of trees" on)."""
    starts = [m.start() for m in _TREE.finditer(model)]
    end = model.index(_END)
    if not starts:
        return model[:end], [], model[end:]
    blocks = [model[a:b] for a, b in zip(starts, starts[1:] + [end])]
    return model[:starts[0]], blocks, model[end:]


def _scaled(block: str, number: int, factor: float) -> str:
    lines = block.rstrip("\n").split("\n")
    out = [f"Tree={number}"]
    for line in lines[1:]:
        if line.startswith("leaf_value="):
            values = line[len("leaf_value="):].split(" ")
            line = "leaf_value=" + " ".join(repr(float(v) * factor) for v in values)
        out.append(line)
    return "\n".join(out) + "\n\n\n"


def average_boosters(boosters: list[lgb.Booster], num_iteration: int) -> lgb.Booster:
    """One booster whose raw score is the mean of `boosters`' at `num_iteration` trees each.

    The boosters must share their features (one Vectorizer) and objective; the header and the
    parameters come from the first.
    """
    if not boosters:
        raise ValueError("no boosters to average")
    if num_iteration < 1:
        raise ValueError(f"num_iteration must be at least 1, got {num_iteration}")
    names = boosters[0].feature_name()
    if any(b.feature_name() != names for b in boosters[1:]):
        raise ValueError("the boosters do not share their features")
    factor = 1.0 / len(boosters)
    header = tail = ""
    trees: list[str] = []
    for k, booster in enumerate(boosters):
        head, blocks, rest = _parts(booster.model_to_string(num_iteration=num_iteration))
        if k == 0:
            header, tail = head, rest
        trees += [_scaled(b, len(trees) + i, factor) for i, b in enumerate(blocks)]
    # the byte sizes of the first booster's trees no longer hold; LightGBM reads without them
    header = "\n".join(line for line in header.split("\n") if not line.startswith("tree_sizes="))
    return lgb.Booster(model_str=header + "".join(trees) + tail)
