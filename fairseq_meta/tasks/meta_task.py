"""What every meta task shares: its episode settings, episodes for the train
split, complete batches for the others, and the meta train step.

The task owns the episode: k (``--meta-train-steps``) and which mini-batches
form it. How θ moves in an inner step belongs to the optimizer
(:mod:`fairseq_meta.optim.meta_optimizer`), which
:func:`~fairseq_meta.meta_learning.meta_train_step` hands the inner gradients.
"""
import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq import utils
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II, MISSING

from ..data.complete_batches_dataset import CompleteBatchesDataset
from ..data.episode_dataset import EpisodeDataset
from ..errors import MetaConfigError
from ..meta_learning import meta_train_step
from ..pairing import check_pairing

logger = logging.getLogger(__name__)


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
    # Read from the rest of the configuration, never set here.
    optimizer_name: Optional[str] = II("optimizer._name")
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
        check_pairing(
            task_name=_resolved(cfg, "_name"),
            optimizer_name=_resolved(cfg, "optimizer_name"),
            meta_train_steps=k,
            ddp_backend=_resolved(cfg, "ddp_backend"),
        )

    @property
    def episode_size(self):
        """k meta-train mini-batches + 1 meta-test mini-batch."""
        return self.cfg.meta_train_steps + 1

    def as_episodes(self, split, dataset):
        """The training split in episodes; any other split (validation) in plain
        mini-batches that cover every example."""
        if split != _resolved(self.cfg, "train_subset", "train"):
            return CompleteBatchesDataset(dataset, split)
        return EpisodeDataset(dataset, self.episode_size)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        k = self.cfg.meta_train_steps
        if len(sample["meta_train"]) != k:
            raise ValueError(
                f"episode has {len(sample['meta_train'])} meta-train mini-batches, expected {k}"
            )
        return meta_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not any("episode_ntokens" in log for log in logging_outputs):
            return  # validation: plain mini-batches
        episode_tokens = sum(utils.item(log.get("episode_ntokens", 0)) for log in logging_outputs)
        # fairseq's wpb/wps count the meta-test mini-batch only. episode_tokens is the
        # exact number of tokens (meta-train and meta-test) the logged updates
        # processed: summed, not averaged, so that a run's total is the sum of its
        # log rows.
        metrics.log_scalar_sum("episode_tokens", int(episode_tokens), priority=205)
        metrics.log_speed("episode_wps", episode_tokens, priority=210, round=1)


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
