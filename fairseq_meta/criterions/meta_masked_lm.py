import math
from dataclasses import dataclass

import torch.nn.functional as F
from fairseq import modules
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.logging import metrics

from ..data.next_sentence_pair_dataset import NSP_HEAD


@dataclass
class MetaMaskedLmConfig(MaskedLmConfig):
    pass


@register_criterion("meta_masked_lm", dataclass=MetaMaskedLmConfig)
class MetaMaskedLmLoss(MaskedLmLoss):
    """Every pre-training objective of a mini-batch: MLM, plus BERT's NSP when the
    batch carries ``nsp_target`` (``--sentence-objective nsp``).

    fairseq divides the summed loss by one sample size (masked tokens here). To
    make that quotient the sum of both objectives' own averages,
    L = MLM_sum / n_masked + NSP_sum / n_pairs, the NSP sum is weighted by
    n_masked / n_pairs before it is added.

    Logs each objective separately and, for training episodes, the meta-train
    loss (first meta-train batch, before adaptation) beside the meta-test loss
    (the meta-test batch at θ_k), in bits like ``masked_lm``.
    """

    def forward(self, model, sample, reduce=True):
        if "nsp_target" not in sample:
            loss, sample_size, logging_output = super().forward(model, sample, reduce)
            logging_output["mlm_loss"] = logging_output["loss"]
            return loss, sample_size, logging_output

        masked_tokens = sample["target"].ne(self.padding_idx)
        sample_size = masked_tokens.int().sum()
        if not masked_tokens.any():  # as masked_lm: project every token then
            masked_tokens = None
        features, _ = model(**sample["net_input"], features_only=True)
        lm_logits = model.encoder.output_layer(features, masked_tokens=masked_tokens)
        targets = model.get_targets(sample, [lm_logits])
        if masked_tokens is not None:
            targets = targets[masked_tokens]
        mlm_loss = modules.cross_entropy(
            lm_logits.view(-1, lm_logits.size(-1)),
            targets.view(-1),
            reduction="sum",
            ignore_index=self.padding_idx,
        )

        nsp_logits = model.classification_heads[NSP_HEAD](features)
        nsp_targets = sample["nsp_target"].view(-1)
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_targets, reduction="sum")
        n_pairs = nsp_targets.numel()
        loss = mlm_loss + nsp_loss * (sample_size.clamp(min=1).to(nsp_loss.dtype) / n_pairs)

        logging_output = {
            "loss": loss.data,
            "mlm_loss": mlm_loss.data,
            "nsp_loss": nsp_loss.data,
            "nsp_correct": (nsp_logits.argmax(-1) == nsp_targets).sum().data,
            "nsp_count": n_pairs,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        MaskedLmLoss.reduce_metrics(logging_outputs)

        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        def log_bits(name, loss_key, size_key):
            size = total(size_key)
            if size > 0:
                metrics.log_scalar(name, total(loss_key) / size / math.log(2), size, round=3)

        def log_accuracy(name, correct_key, count_key):
            count = total(count_key)
            if count > 0:
                metrics.log_scalar(name, 100.0 * total(correct_key) / count, count, round=2)

        log_bits("mlm_loss", "mlm_loss", "sample_size")
        log_bits("nsp_loss", "nsp_loss", "nsp_count")
        log_accuracy("nsp_accuracy", "nsp_correct", "nsp_count")
        if total("meta_train_sample_size") > 0:
            # meta-train: the first meta-train batch at θ (before adaptation);
            # meta-test: the meta-test batch at θ_k, the loss the update follows.
            log_bits("meta_train_loss", "meta_train_loss", "meta_train_sample_size")
            log_bits("meta_test_loss", "loss", "sample_size")
            if total("meta_train_nsp_count") > 0:
                log_bits("meta_train_mlm_loss", "meta_train_mlm_loss", "meta_train_sample_size")
                log_bits("meta_train_nsp_loss", "meta_train_nsp_loss", "meta_train_nsp_count")
            log_accuracy("meta_train_nsp_accuracy", "meta_train_nsp_correct", "meta_train_nsp_count")

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
