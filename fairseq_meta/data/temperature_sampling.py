"""Temperature-smoothed sampling across corpora or tasks, as fairseq's
multilingual_masked_lm does it: p_i ∝ n_i^alpha (alpha = 1 proportional to size,
0 uniform), realised by resampling each dataset to p_i · Σn examples per epoch."""
import numpy as np
from fairseq.data import ResamplingDataset


def sampling_probabilities(sizes, alpha):
    sizes = np.asarray(sizes, dtype=float)
    probs = (sizes / sizes.sum()) ** alpha
    return probs / probs.sum()


def resample(datasets, probs, seed, epoch):
    """Each dataset resampled to probs[i] · Σ len. Same seed, epoch and length
    give the same draw, so parallel datasets (sequences and their labels) stay
    aligned."""
    total = sum(len(d) for d in datasets)
    resampled = []
    for dataset, p in zip(datasets, probs):
        ratio = p * total / len(dataset)
        resampled.append(
            ResamplingDataset(dataset, size_ratio=ratio, seed=seed, epoch=epoch, replace=ratio >= 1.0)
        )
    return resampled
