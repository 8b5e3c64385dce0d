"""Comparisons paired by pre-training seed, from ``scripts/evaluate.py`` results.

``evaluate.py`` pairs checkpoints by *evaluation* seed (the same adaptation
batches and masks for every checkpoint): that is the instrument's noise. Whether
one pre-training setting beats another is a question about pre-training runs,
so here the unit of replication is the pre-training seed:

* a checkpoint's score is the mean of its per-seed numbers for one measurement
  and column (e.g. adaptation, ``t=64``);
* a comparison pairs ``treatment`` and ``baseline`` checkpoint labels that name
  the same pre-training seed (templates with ``{seed}``, e.g.
  ``s{seed}-k1`` against ``s{seed}-k0``), and summarises the per-seed
  differences with :func:`fairseq_meta.evaluation.stats.paired`: mean, 95%
  interval (Student's t over pre-training seeds), separation and the minimum
  detectable effect at that number of seeds.
"""
import json

from ..errors import MetaConfigError
from . import stats


def load_raw(paths, measurement):
    """{label: {column: {eval_seed: value}}} merged over ``results.json`` files.
    ``measurement`` is a measurement's name, or ``fewshot-N`` for the few-shot runs
    with N training examples per task (its seeds are the draws); ``probe`` has one
    score per checkpoint and column, read as the single evaluation seed "0"."""
    raw = {}
    name, _, size = measurement.partition("-") if measurement.startswith("fewshot-") else (measurement, "", "")
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                results = json.load(f)
        except (OSError, ValueError) as e:
            raise MetaConfigError(f"{path}: not a readable results.json ({e})") from None
        block = results.get("measurements", {}).get(name)
        if size and block is not None:
            block = block.get("by_n", {}).get(size)
        if name == "probe" and block is not None and "score" in block:
            # deterministic: one score per checkpoint and column, no evaluation seeds
            block = {"raw": {label: {col: {"0": v} for col, v in cols.items()}
                             for label, cols in block["score"].items()}}
        if block is None or "raw" not in block:
            raise MetaConfigError(f"{path}: holds no per-seed {measurement!r} numbers")
        for label, columns in block["raw"].items():
            if label in raw and raw[label] != columns:
                raise MetaConfigError(f"checkpoint label {label!r} differs between results files")
            raw[label] = columns
    return raw


def checkpoint_scores(raw, column):
    """{label: mean over evaluation seeds} of one column."""
    out = {}
    for label, columns in raw.items():
        if column not in columns:
            raise MetaConfigError(f"{label}: no column {column!r} (has {', '.join(columns)})")
        out[label] = stats.summary(list(columns[column].values()))["mean"]
    return out


def compare(scores, treatment, baseline, seeds):
    """:func:`stats.paired` of treatment − baseline over pre-training ``seeds``,
    with the per-seed scores."""
    missing = [t.format(seed=s) for s in seeds for t in (treatment, baseline)
               if t.format(seed=s) not in scores]
    if missing:
        raise MetaConfigError(f"no results for checkpoint(s) {', '.join(missing)}")
    values = {s: scores[treatment.format(seed=s)] for s in seeds}
    base = {s: scores[baseline.format(seed=s)] for s in seeds}
    out = stats.paired(values, base)
    out.update(treatment=treatment, baseline=baseline, treatment_scores=values, baseline_scores=base)
    return out


def fmt_signed(v):
    return "n/a" if v is None else f"{v:+.3f}"


def _plain(v):
    return "n/a" if v is None else f"{v:.3f}"


def table(comparisons, unit, better="lower"):
    """Markdown rows: one comparison per row. ``better``: "lower" (bits) or "higher"
    (GLUE points, accuracy); the last column counts the seeds where the treatment is better."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better: 'lower' or 'higher', not {better!r}")
    sign = -1 if better == "lower" else 1
    rows = ["| comparison | pre-training seeds | difference, mean [95% CI] | sd | MDE | "
            f"treatment {better} |", "|---|---|---|---|---|---|"]
    for name, c in comparisons.items():
        count = sum(sign * (c["treatment_scores"][s] - c["baseline_scores"][s]) > 0 for s in c["treatment_scores"])
        rows.append(f"| {name} | {', '.join(c['seeds'])} | {fmt_signed(c['mean'])} "
                    f"[{fmt_signed(c['ci_low'])}, {fmt_signed(c['ci_high'])}] {unit} | {_plain(c['std'])} "
                    f"| {_plain(c['mde'])} | {count}/{c['n']} |")
    return rows
