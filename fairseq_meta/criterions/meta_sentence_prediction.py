import math
from dataclasses import dataclass
from functools import partial

import torch

from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.sentence_prediction import (
    SentencePredictionConfig as SentencePredictionCriterionConfig,
    SentencePredictionCriterion,
)
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics


@dataclass
class MetaSentencePredictionCriterionConfig(FairseqDataclass):
    pass


@register_criterion("meta_sentence_prediction", dataclass=MetaSentencePredictionCriterionConfig)
class MetaSentencePredictionCriterion(FairseqCriterion):
    """The loss of a multi-task mini-batch ``{"tasks": {name: batch}}``: for each
    task, fairseq's own ``sentence_prediction`` criterion with that task's head
    (cross-entropy, or MSE for regression), summed; the sample size is the number
    of examples, so L = Σ_task loss_sum / n_examples.

    Logs per task: ``<task>_loss`` and ``<task>_accuracy`` (classification) or
    ``<task>_pearson`` (regression), and their ``meta_train_`` counterparts for the
    first meta-train batch before adaptation. In validation, classification tasks also
    log ``<task>_mcc`` (Matthews correlation × 100, multi-class form): CoLA's GLUE
    metric, and the one that tells a head that learned from one that predicts the
    majority class (MCC 0), which accuracy does not. r and the MCC come from statistics
    summed over batches and workers, so they are the whole dev set's (see below).
    """

    def __init__(self, cfg, task):
        super().__init__(task)
        self.per_task = {
            name: SentencePredictionCriterion(
                SentencePredictionCriterionConfig(
                    classification_head_name=name, regression_target=sub.cfg.regression_target
                ),
                sub,
            )
            for name, sub in task.subtasks.items()
        }

    def forward(self, model, sample, reduce=True):
        loss, sample_size, log = 0, 0, {"ntokens": 0, "nsentences": 0}
        for name, batch in sample["tasks"].items():
            task_loss, task_size, task_log = self.per_task[name](model, batch)
            loss = loss + task_loss
            sample_size += task_size
            log["ntokens"] += task_log["ntokens"]
            log["nsentences"] += task_log["nsentences"]
            log[f"{name}_loss"] = task_log["loss"]
            log[f"{name}_count"] = task_size
            if "ncorrect" in task_log:
                log[f"{name}_correct"] = task_log["ncorrect"]
                if not model.training:
                    log.update(self._confusion(name, model, batch))
            else:  # regression: sufficient statistics of Pearson's r
                log.update(self._pearson_stats(name, model, batch))
        log["loss"] = loss.data
        log["sample_size"] = sample_size
        return loss, sample_size, log

    def _confusion(self, name, model, batch):
        # One scalar per cell, as fairseq all-reduces scalars only; the predictions
        # again, without grad, as in _pearson_stats.
        with torch.no_grad():
            logits, _ = model(**batch["net_input"], features_only=True, classification_head_name=name)
        preds = logits.argmax(dim=-1).view(-1)
        targets = model.get_targets(batch, [logits]).view(-1)
        classes = logits.size(-1)
        return {f"{name}_confusion_{y}_{p}": ((targets == y) & (preds == p)).sum()
                for y in range(classes) for p in range(classes)}

    def _pearson_stats(self, name, model, batch):
        # The head's outputs again, without grad: the stock criterion does not
        # return its predictions while training.
        with torch.no_grad():
            x, _ = model(**batch["net_input"], features_only=True, classification_head_name=name)
        x = x.view(-1).float()
        y = model.get_targets(batch, [x]).view(-1).float()
        return {
            f"{name}_sx": x.sum(), f"{name}_sy": y.sum(), f"{name}_sxx": (x * x).sum(),
            f"{name}_syy": (y * y).sum(), f"{name}_sxy": (x * y).sum(),
        }

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size = total("sample_size")
        if sample_size > 0:
            metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        names = sorted({k[: -len("_count")] for log in logging_outputs for k in log
                        if k.endswith("_count") and not k.startswith("meta_train_")})
        for prefix in ("", "meta_train_"):
            for name in names:
                n = total(f"{prefix}{name}_count")
                if n == 0:
                    continue
                key = f"{prefix}{name}"
                metrics.log_scalar(f"{key}_loss", total(f"{key}_loss") / n / math.log(2), n, round=3)
                if any(f"{key}_correct" in log for log in logging_outputs):
                    metrics.log_scalar(f"{key}_accuracy", 100.0 * total(f"{key}_correct") / n, n, round=1)
                    cells = [k for k in {k for log in logging_outputs for k in log}
                             if k.startswith(f"{key}_confusion_")]
                    for cell in cells:
                        metrics.log_scalar_sum(f"_{cell}", total(cell))
                    if cells:
                        metrics.log_derived(f"{key}_mcc", partial(_derived_mcc, key, math.isqrt(len(cells))))
                elif any(f"{key}_sxy" in log for log in logging_outputs):
                    for stat in ("count", "sx", "sy", "sxx", "syy", "sxy"):
                        metrics.log_scalar_sum(f"_{key}_{stat}", total(f"{key}_{stat}"))
                    metrics.log_derived(f"{key}_pearson", partial(_derived_pearson, key))
        if total("meta_train_sample_size") > 0:
            metrics.log_scalar(
                "meta_train_loss",
                total("meta_train_loss") / total("meta_train_sample_size") / math.log(2),
                total("meta_train_sample_size"), round=3,
            )
            metrics.log_scalar("meta_test_loss", total("loss") / sample_size / math.log(2), sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


# Validation scores over a whole dev set: fairseq reduces the logging outputs of each
# validation batch as it comes, so a score averaged per batch would be the mean of
# per-batch scores. These sum their statistics over the batches (hidden "_" meters)
# and derive the score from the sums when it is printed.
def matthews_corrcoef(confusion):
    """Matthews correlation of a confusion matrix (rows: label, columns: prediction),
    Gorodkin's multi-class form; 0 where labels or predictions take one class."""
    confusion = torch.as_tensor(confusion, dtype=torch.float64)
    n, correct = confusion.sum(), confusion.trace()
    t, q = confusion.sum(dim=1), confusion.sum(dim=0)
    cov_yy, cov_pp = n * n - t @ t, n * n - q @ q
    if cov_yy == 0 or cov_pp == 0:
        return 0.0
    return float((correct * n - t @ q) / (cov_yy * cov_pp).sqrt())


def _derived_mcc(key, classes, meters):
    confusion = [[meters[f"_{key}_confusion_{y}_{p}"].sum if f"_{key}_confusion_{y}_{p}" in meters else 0
                  for p in range(classes)] for y in range(classes)]
    return round(100.0 * matthews_corrcoef(confusion), 2)


def _derived_pearson(key, meters):
    n, sx, sy, sxx, syy, sxy = (float(meters[f"_{key}_{stat}"].sum)
                                for stat in ("count", "sx", "sy", "sxx", "syy", "sxy"))
    if n == 0:  # a meter reset since (train_inner after each log line)
        return float("nan")
    cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    return round(cov / (vx * vy) ** 0.5, 4) if vx > 0 and vy > 0 else float("nan")
