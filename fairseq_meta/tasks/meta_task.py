"""What every meta task shares: episodes for the train split, the meta train
step, and the checks that must fail before training starts."""
import logging

from fairseq import utils
from fairseq.logging import metrics
from omegaconf import MISSING

from ..errors import MetaConfigError
from ..data.episode_dataset import EpisodeDataset
from ..meta_learning import meta_train_step
from ..optim.meta_optimizer import find_meta_optimizer

logger = logging.getLogger(__name__)


class MetaTask:
    """Mixin for a :class:`~fairseq.tasks.FairseqTask` subclass whose config has
    ``meta_train_steps``, ``optimizer_name`` (``II("optimizer._name")``),
    ``train_subset`` (``II("dataset.train_subset")``) and ``ddp_backend``
    (``II("distributed_training.ddp_backend")``)."""

    is_meta_task = True

    @classmethod
    def check_meta_config(cls, cfg):
        k = cfg.meta_train_steps
        if k < 0:
            raise MetaConfigError(f"--meta-train-steps must be >= 0 (got {k})")
        optimizer_name = _resolved(cfg, "optimizer_name")
        if k > 0 and optimizer_name is not None and not _is_meta_optimizer(optimizer_name):
            raise MetaConfigError(
                f"--meta-train-steps {k} needs a meta optimizer for its inner steps, "
                f"got --optimizer {optimizer_name}; use --optimizer meta_adam "
                "(or --meta-train-steps 0 for plain multi-task training)"
            )
        if k > 0 and _resolved(cfg, "ddp_backend") == "fully_sharded":
            raise MetaConfigError(
                f"--meta-train-steps {k} does not support --ddp-backend fully_sharded: inner "
                "steps update full, unsharded weights on every rank; use --ddp-backend "
                "pytorch_ddp (c10d) or legacy_ddp"
            )

    @property
    def episode_size(self):
        """k meta-train (support) mini-batches + 1 meta-test (query) mini-batch."""
        return self.cfg.meta_train_steps + 1

    def as_episodes(self, split, dataset):
        """Wrap the training split in episodes; other splits stay plain batches."""
        if split != _resolved(self.cfg, "train_subset", "train"):
            return dataset
        return EpisodeDataset(dataset, self.episode_size)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        meta_optimizer = find_meta_optimizer(optimizer)
        k = self.cfg.meta_train_steps
        if k > 0 and meta_optimizer is None:
            raise MetaConfigError(
                f"--meta-train-steps {k} needs a meta optimizer (e.g. --optimizer meta_adam), "
                f"got {type(optimizer).__name__}"
            )
        if len(sample["support"]) != k:
            raise ValueError(
                f"episode has {len(sample['support'])} support mini-batches, expected {k}"
            )
        if meta_optimizer is not None:
            meta_optimizer.count_inner_steps(k)
        return meta_train_step(
            self, sample, model, criterion, optimizer, update_num, ignore_grad,
            inner_lr=meta_optimizer.inner_lr if meta_optimizer else None,
            second_order=meta_optimizer.second_order if meta_optimizer else False,
        )


    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not any("episode_ntokens" in log for log in logging_outputs):
            return  # validation: plain mini-batches
        episode_tokens = sum(utils.item(log.get("episode_ntokens", 0)) for log in logging_outputs)
        # fairseq's wpb/wps count the query mini-batch only. episode_tokens is the
        # exact number of tokens (support and query) the logged updates processed:
        # summed, not averaged, so that a run's total is the sum of its log rows.
        metrics.log_scalar_sum("episode_tokens", int(episode_tokens), priority=205)
        metrics.log_speed("episode_wps", episode_tokens, priority=210, round=1)


def _is_meta_optimizer(name):
    from fairseq.optim import OPTIMIZER_REGISTRY

    from ..optim.meta_optimizer import MetaOptimizer

    cls = OPTIMIZER_REGISTRY.get(name)
    return cls is not None and issubclass(cls, MetaOptimizer)


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
