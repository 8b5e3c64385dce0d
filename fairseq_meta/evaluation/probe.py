"""Frozen-feature probe: a linear model on the encoder's sentence features.

Features of an example (one sentence, or a pair encoded as fine-tuning encodes
it: ``<s> A </s></s> B </s>``, cut to max_positions) are the final layer's
vector at ``<s>`` concatenated with the mean of the final layer over the
example's tokens (padding excluded), from the encoder in eval mode. The
sequences are exactly those fine-tuning reads (fairseq's
``sentence_prediction`` datasets of the prepared task directory).

Classification: standardised features, scikit-learn ``LogisticRegressionCV``
(C on a log grid, 5-fold stratified cross-validation with a fixed shuffle);
regression (STS-B): ``RidgeCV`` (alpha on a log grid, efficient leave-one-out).
Trained on the full train split (or the capped one), scored on the dev split
with the task's GLUE score. Deterministic: no seeds. Its uncertainty is that of
the dev sample, estimated by a bootstrap over dev examples that uses the same
resamples for every checkpoint (paired).
"""
import numpy as np

from .glue_runs import label_values, run_config
from .model import device_of

CS = np.logspace(-3, 3, 7)
ALPHAS = np.logspace(-2, 4, 7)


def sentence_features(model, dataset, batch_size=64):
    """(features [n, 2 * dim], targets [n]) of a sentence_prediction dataset."""
    import torch

    pad = model.encoder.sentence_encoder.padding_idx
    device = device_of(model)
    feats, targets = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            sample = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            tokens = sample["net_input"]["src_tokens"].to(device)
            x, _ = model(tokens, features_only=True)
            keep = (tokens != pad).unsqueeze(-1).to(x.dtype)
            mean = (x * keep).sum(1) / keep.sum(1)
            feats.append(torch.cat([x[:, 0], mean], dim=-1).double().cpu().numpy())
            targets.append(sample["target"].view(-1).numpy())
    return np.concatenate(feats), np.concatenate(targets)


def fit_predict(train_x, train_y, dev_x, regression, cv_seed=0):
    """Dev predictions of the cross-validated linear model, and the chosen
    regularisation."""
    import warnings

    with warnings.catch_warnings():
        # scikit-learn 1.8 announces changes of LogisticRegressionCV's defaults
        warnings.simplefilter("ignore", FutureWarning)
        return _fit_predict(train_x, train_y, dev_x, regression, cv_seed)


def _fit_predict(train_x, train_y, dev_x, regression, cv_seed):
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if regression:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
        model.fit(train_x, train_y.astype(float))
        return model.predict(dev_x), float(model[-1].alpha_)
    classes, counts = np.unique(train_y, return_counts=True)
    if len(classes) < 2:
        return np.full(len(dev_x), classes[0]), None
    folds = int(min(5, counts.min()))
    if folds < 2:  # too few examples of a class to cross-validate
        from sklearn.linear_model import LogisticRegression

        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(train_x, train_y)
        return model.predict(dev_x), 1.0
    cv = StratifiedKFold(folds, shuffle=True, random_state=cv_seed)
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=CS, cv=cv, max_iter=2000))
    model.fit(train_x, train_y)
    return model.predict(dev_x), float(model[-1].C_[0])


def probe_task(checkpoint, model, task_dir, record, train_indices=None):
    """{score, metrics, preds, gold, C_or_alpha, n_train, n_dev} of the probe on one task.
    ``preds`` and ``gold`` are label values (class labels, or scores)."""
    from fairseq import tasks

    from .glue_runs import score

    cfg = run_config(checkpoint, task_dir, record, 1, max_update=1, max_epoch=1, lr=1e-5, batch_size=16)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train", combine=False, epoch=1)
    task.load_dataset("valid", combine=False, epoch=1)
    train = task.dataset("train")
    if train_indices is not None:
        from .glue_runs import IndexSubset

        train = IndexSubset(train, train_indices)
    train_x, train_y = sentence_features(model, train)
    dev_x, dev_y = sentence_features(model, task.dataset("valid"))
    preds, reg = fit_predict(train_x, train_y, dev_x, record.regression)
    values = label_values(task, record, cfg.task.num_classes)
    if record.regression:
        pred_values, gold = preds.astype(float), dev_y.astype(float)
        outputs = preds.reshape(-1, 1)
    else:
        pred_values, gold = values[preds.astype(int)], values[dev_y.astype(int)]
        outputs = np.eye(cfg.task.num_classes)[preds.astype(int)]
    task_score, metrics, constant = score(record, outputs, dev_y, values)
    return {"score": task_score, "metrics": metrics, "constant": constant,
            "preds": pred_values.tolist(), "gold": gold.tolist(),
            "regularisation": reg, "n_train": int(len(train_y)), "n_dev": int(len(dev_y))}
