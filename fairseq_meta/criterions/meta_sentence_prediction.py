import math
from dataclasses import dataclass

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
    ``<task>_pearson`` (regression, from summed statistics so that it aggregates
    across workers), and their ``meta_train_`` counterparts for the first
    meta-train batch before adaptation.
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
            else:  # regression: sufficient statistics of Pearson's r
                log.update(self._pearson_stats(name, model, batch))
        log["loss"] = loss.data
        log["sample_size"] = sample_size
        return loss, sample_size, log

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
                elif any(f"{key}_sxy" in log for log in logging_outputs):
                    sx, sy = total(f"{key}_sx"), total(f"{key}_sy")
                    cov = total(f"{key}_sxy") - sx * sy / n
                    vx = total(f"{key}_sxx") - sx * sx / n
                    vy = total(f"{key}_syy") - sy * sy / n
                    if vx > 0 and vy > 0:
                        metrics.log_scalar(f"{key}_pearson", float(cov / (vx * vy) ** 0.5), n, round=4)
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
