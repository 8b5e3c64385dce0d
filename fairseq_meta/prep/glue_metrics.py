"""GLUE dev-set metrics in plain numpy (no scikit-learn / scipy needed at run time).

Every function takes ``(preds, labels)`` — predictions first, as fairseq's
``sentence_prediction`` criterion does — and returns a Python float on the 0..1 scale
(correlations on -1..1). Fine-tuning reports them multiplied by 100, as the GLUE
leaderboard and the RoBERTa paper do.

Which task is scored with which metrics is part of the task table in
``fairseq_meta/prep/glue.py``.

Degenerate inputs follow scikit-learn / scipy: F1 with no positive prediction and no
positive label is 0; Matthews correlation is 0 when either side is constant; Pearson and
Spearman are NaN when either side is constant (undefined, as in scipy).
"""
import math

import numpy as np

__all__ = ["accuracy", "f1", "matthews_corrcoef", "pearson", "spearman", "rankdata", "METRICS"]


def _pair(preds, labels, dtype=None):
    p = np.asarray(preds, dtype=dtype).reshape(-1)
    y = np.asarray(labels, dtype=dtype).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("no examples to score")
    return p, y


def accuracy(preds, labels):
    """Fraction of predictions equal to the label."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1(preds, labels, positive=1):
    """Binary F1 of class ``positive``: 2 TP / (2 TP + FP + FN); 0 when that is 0 / 0."""
    p, y = _pair(preds, labels)
    pp, yp = p == positive, y == positive
    tp = int(np.sum(pp & yp))
    fp = int(np.sum(pp & ~yp))
    fn = int(np.sum(~pp & yp))
    denom = 2 * tp + fp + fn
    return 2.0 * tp / denom if denom else 0.0


def matthews_corrcoef(preds, labels):
    """Matthews correlation coefficient, multi-class form (Gorodkin 2004), as
    scikit-learn computes it; 0 when predictions or labels take a single value."""
    p, y = _pair(preds, labels)
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    n = y.size
    y_code, p_code = codes[:n], codes[n:]
    k = classes.size
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (y_code, p_code), 1.0)
    t = confusion.sum(axis=1)  # how often each class is the label
    q = confusion.sum(axis=0)  # how often each class is predicted
    c = np.trace(confusion)
    s = float(n)
    cov_yp = c * s - float(t @ q)
    cov_yy = s * s - float(t @ t)
    cov_pp = s * s - float(q @ q)
    if cov_yy == 0.0 or cov_pp == 0.0:
        return 0.0
    return float(cov_yp / math.sqrt(cov_yy * cov_pp))


def pearson(preds, labels):
    """Pearson's r; NaN when either input is constant."""
    p, y = _pair(preds, labels, dtype=np.float64)
    if p.size < 2:
        return float("nan")
    dp, dy = p - p.mean(), y - y.mean()
    norm = math.sqrt(float(dp @ dp)) * math.sqrt(float(dy @ dy))
    if norm == 0.0:
        return float("nan")
    r = float(dp @ dy) / norm
    return max(-1.0, min(1.0, r))


def rankdata(x):
    """1-based ranks, ties get the average of the ranks they span (scipy's 'average')."""
    x = np.asarray(x).reshape(-1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # elements strictly smaller than each value
    return (before + (counts + 1) / 2.0)[inverse.reshape(-1)]


def spearman(preds, labels):
    """Spearman's rho: Pearson's r of the (tie-averaged) ranks; NaN when either input
    is constant."""
    p, y = _pair(preds, labels, dtype=np.float64)
    return pearson(rankdata(p), rankdata(y))


# Metric name -> function; a task names its metrics (fairseq_meta/prep/glue.py).
METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
