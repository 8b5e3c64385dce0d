"""What every meta task shares: its episode settings, episodes for the train
split, complete batches for the others, and the meta train step.

The task owns the episode: k (``--meta-train-steps``) and which mini-batches
form it. How θ moves in an inner step belongs to the optimizer
(:mod:`fairseq_meta.optim.meta_optimizer`), which
:func:`~fairseq_meta.meta_learning.meta_train_step` hands the inner gradients.
"""
import collections
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II, MISSING

from ..data.complete_batches_dataset import CompleteBatchesDataset
from ..data.episode_dataset import EpisodeDataset
from ..errors import MetaConfigError
from ..meta_learning import adapted_valid_step, meta_train_step
from ..optim.meta_optimizer import find_meta_optimizer
from ..pairing import check_pairing

logger = logging.getLogger(__name__)

META_OBJECTIVE_CHOICES = ChoiceEnum(["maml", "reptile"])


@dataclass
class MetaTaskConfig(FairseqDataclass):
    """The settings of a meta task's episodes, declared once for every meta task."""

    meta_train_steps: int = field(
        default=1,
        metadata={
            "help": "k, the depth of meta-train: an episode is k meta-train mini-batches "
            "(k inner steps) and 1 meta-test mini-batch; 0 is plain multi-task "
            "training (with --task meta_masked_lm, identical to --task masked_lm)"
        },
    )
    meta_objective: META_OBJECTIVE_CHOICES = field(
        default="maml",
        metadata={
            "help": "maml: k meta-train mini-batches adapt θ to θ_k, the meta-gradient is "
            "∇L(θ_k; B_q) of a held-back meta-test mini-batch (first or second order); "
            "reptile (Nichol et al. 2018): the episode is k mini-batches, all inner steps, "
            "and the outer optimizer receives (θ − θ_k) / (kα), the mean inner direction; "
            "no meta-test batch, first order only"
        },
    )
    log_adaptation_interval: int = field(
        default=100,
        metadata={
            "help": "every N updates (the last of every N), measure what the inner steps "
            "did: adaptation_gain (query loss before minus after the inner steps, bits, "
            "per objective; one extra forward without gradient), inner_move "
            "(‖θ_k − θ‖/‖θ‖) and outer_move (‖Δθ‖/‖θ‖ of the outer step); 0 = never"
        },
    )
    valid_adapt_steps: int = field(
        default=0,
        metadata={
            "help": "K > 0: validation also reports valid_adapted_loss, the loss on each "
            "validation mini-batch after K inner steps (the training rule) on the K "
            "mini-batches before it, θ restored afterwards; valid_loss stays the loss at "
            "θ. 0 = off"
        },
    )
    # Read from the rest of the configuration, never set here. oc.select: tools
    # that build no optimizer (fairseq-validate) resolve it to None.
    optimizer_name: Optional[str] = II("oc.select:optimizer._name,null")
    meta_order: Optional[str] = II("oc.select:optimizer.meta_order,null")
    inner_lr_learned: Optional[str] = II("oc.select:optimizer.inner_lr_learned,null")
    train_subset: str = II("dataset.train_subset")
    ddp_backend: Optional[str] = II("distributed_training.ddp_backend")


class MetaTask:
    """Mixin for a :class:`~fairseq.tasks.FairseqTask` subclass whose config
    derives from :class:`MetaTaskConfig`."""

    is_meta_task = True

    @classmethod
    def check_meta_config(cls, cfg):
        k = cfg.meta_train_steps
        if k < 0:
            raise MetaConfigError(f"--meta-train-steps must be >= 0 (got {k})")
        if cfg.log_adaptation_interval < 0:
            raise MetaConfigError(
                f"--log-adaptation-interval must be >= 0 (0 = off; got {cfg.log_adaptation_interval})"
            )
        if cfg.valid_adapt_steps < 0:
            raise MetaConfigError(
                f"--valid-adapt-steps must be >= 0 (0 = off; got {cfg.valid_adapt_steps})"
            )
        check_pairing(
            task_name=_resolved(cfg, "_name"),
            optimizer_name=_resolved(cfg, "optimizer_name"),
            meta_train_steps=k,
            ddp_backend=_resolved(cfg, "ddp_backend"),
            meta_objective=str(_resolved(cfg, "meta_objective", "maml")),
            meta_order=_resolved(cfg, "meta_order"),
            inner_lr_learned=_resolved(cfg, "inner_lr_learned"),
        )

    @property
    def holds_back_meta_test(self):
        """Whether an episode ends with a meta-test mini-batch: always for MAML and
        for k = 0 (plain training); never for Reptile."""
        return self.cfg.meta_train_steps == 0 or str(self.cfg.meta_objective) != "reptile"

    @property
    def episode_size(self):
        """k meta-train mini-batches + 1 meta-test mini-batch (Reptile: k)."""
        return self.cfg.meta_train_steps + int(self.holds_back_meta_test)

    def as_episodes(self, split, dataset):
        """The training split in episodes; any other split (validation) in plain
        mini-batches that cover every example."""
        if split != _resolved(self.cfg, "train_subset", "train"):
            return CompleteBatchesDataset(dataset, split)
        return EpisodeDataset(dataset, self.episode_size, meta_test=self.holds_back_meta_test)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        k = self.cfg.meta_train_steps
        if len(sample["meta_train"]) != k:
            raise ValueError(
                f"episode has {len(sample['meta_train'])} meta-train mini-batches, expected {k}"
            )
        # Adapted validation runs the inner steps of training, which belong to the
        # optimizer: keep the one fairseq hands training.
        self._outer_optimizer = optimizer
        return meta_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        interval = self.cfg.log_adaptation_interval
        if not (interval > 0 and self.cfg.meta_train_steps > 0 and (update_num + 1) % interval == 0):
            return super().optimizer_step(optimizer, model, update_num)
        # outer_move = ‖Δθ‖ / ‖θ‖ of this outer step, on the same updates that
        # measure the inner steps (one copy of θ, on those updates only).
        params = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().float().clone() for p in params]
        super().optimizer_step(optimizer, model, update_num)
        with torch.no_grad():
            moved = sum(torch.linalg.vector_norm(p.detach().float() - b) ** 2 for p, b in zip(params, before))
            norm = sum(torch.linalg.vector_norm(b) ** 2 for b in before)
        self._outer_move = math.sqrt(float(moved) / max(float(norm), 1e-30))

    def valid_step(self, sample, model, criterion):
        loss, sample_size, log = super().valid_step(sample, model, criterion)
        k = self.cfg.valid_adapt_steps
        if k > 0:
            support = self._valid_support_batches()
            optimizer = getattr(self, "_outer_optimizer", None)
            if len(support) == k and optimizer is not None:
                adapted = adapted_valid_step(model, criterion, list(support), sample, optimizer)
                if adapted is not None:
                    log = dict(log, **_adapted_valid_log(log, *adapted))
            elif optimizer is None and not getattr(self, "_warned_no_optimizer", False):
                self._warned_no_optimizer = True
                logger.warning(
                    "--valid-adapt-steps: no valid_adapted_loss before the first training "
                    "update (the inner steps are the meta optimizer's, which training hands "
                    "the task); valid_loss is the loss at θ"
                )
            support.append(sample)
        return loss, sample_size, log

    def _valid_support_batches(self):
        support = getattr(self, "_valid_support", None)
        if support is None or support.maxlen != self.cfg.valid_adapt_steps:
            support = self._valid_support = collections.deque(maxlen=self.cfg.valid_adapt_steps)
        return support

    def get_batch_iterator(self, dataset, *args, **kwargs):
        # Each validation subset starts adapting afresh: support batches come from
        # the subset being scored, never from the one before it.
        self._valid_support = None
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)

        def total(key):
            return sum(utils.item(log.get(key, 0)) for log in logging_outputs)

        _log_adaptation(logging_outputs, total)
        if total("adapted_sample_size") > 0:  # validation after adaptation
            size = total("adapted_sample_size")
            metrics.log_scalar("adapted_loss", total("adapted_loss") / size / math.log(2), size,
                               priority=1, round=3)
        if not any("episode_ntokens" in log for log in logging_outputs):
            return  # validation: plain mini-batches
        _log_learned_inner_lr(getattr(self, "_outer_optimizer", None))
        outer_move, self._outer_move = getattr(self, "_outer_move", None), None
        if outer_move is not None:
            metrics.log_scalar("outer_move", outer_move, 1, round=6)
        else:
            _drop_unmeasured("outer_move")
        episode_tokens = total("episode_ntokens")
        # fairseq's wpb/wps count the meta-test mini-batch only. episode_tokens is the
        # exact number of tokens (meta-train and meta-test) the logged updates
        # processed: summed, not averaged, so that a run's total is the sum of its
        # log rows.
        metrics.log_scalar_sum("episode_tokens", int(episode_tokens), priority=205)
        metrics.log_speed("episode_wps", episode_tokens, priority=210, round=1)


# adaptation_gain* (bits) per loss key, with the logging-output key of its size.
_GAIN_METRICS = {"loss": ("adaptation_gain", "adapt_sample_size"),
                 "mlm_loss": ("adaptation_gain_mlm", "adapt_sample_size"),
                 "nsp_loss": ("adaptation_gain_nsp", "adapt_nsp_count")}


def _log_adaptation(logging_outputs, total):
    """adaptation_gain (per objective, bits) and inner_move of the updates that
    measured them. Each is logged weighted by what it averages over (tokens; one
    per update for inner_move), so that a log row over several updates is their
    average over the measured ones. On an update that measured nothing they are
    left out: a meter reset at the last log row and not refilled is dropped, so
    a row with no measurement shows none instead of a stale or empty value."""
    if total("theta_norm_sq") > 0:
        metrics.log_scalar("inner_move", math.sqrt(total("inner_move_sq") / total("theta_norm_sq")),
                           1, round=6)
    else:
        _drop_unmeasured("inner_move")
    for key, (name, size_key) in _GAIN_METRICS.items():
        size = total(size_key)
        if size > 0 and any("adapt_before_" + key in log for log in logging_outputs):
            gain = (total("adapt_before_" + key) - total("adapt_after_" + key)) / size / math.log(2)
            metrics.log_scalar(name, gain, size, round=4)
        else:
            _drop_unmeasured(name)


def _log_learned_inner_lr(optimizer):
    """inner_lr_mean, _min, _max (over the entries of α: tensors or weights) of a
    learned α, as it stands after the logged update; averaged over a log row's
    updates like every other training metric (and so in tensorboard)."""
    inner = find_meta_optimizer(optimizer)
    learned = getattr(inner, "learned_inner_lr", None)
    stats = learned.stats() if learned is not None else None
    for name, value in (stats or {}).items():
        metrics.log_scalar(name, value, 1, round=6)


def _drop_unmeasured(*names):
    """Remove these meters where they hold nothing since the last reset. fairseq
    resets meters after each log row but keeps them, and a kept empty
    AverageMeter prints as None; a MetersDict keeps its order in ``priorities``
    beside the dict, so both lose the entry."""
    for aggregator in metrics.get_active_aggregators():
        for name in names:
            meter = aggregator.get(name)
            if meter is not None and getattr(meter, "count", 1) == 0:
                del aggregator[name]
                aggregator.priorities[:] = [e for e in aggregator.priorities if e[2] != name]


def _adapted_valid_log(log, adapted_log, sample_size):
    """Summed adapted loss and its size; the loss at θ on the same (scored)
    batches, so that the gain compares like with like."""
    out = {"adapted_loss": adapted_log["loss"], "adapted_sample_size": sample_size,
           "adapt_sample_size": log.get("sample_size", sample_size),
           "adapt_before_loss": log["loss"], "adapt_after_loss": adapted_log["loss"]}
    return out


def _resolved(cfg, key, default=None):
    """An interpolated config value, or *default* where it cannot be resolved
    (e.g. a task built from a checkpoint's config without an optimizer)."""
    try:
        value = getattr(cfg, key)
    except Exception:
        return default
    if value is None or value == MISSING or (isinstance(value, str) and value.startswith("${")):
        return default
    return value
