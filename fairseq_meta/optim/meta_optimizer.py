"""The inner-loop machinery, written once, that turns any fairseq optimizer into
a meta optimizer. A concrete one is three lines: see :mod:`.meta_adam`."""
import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..errors import MetaConfigError

logger = logging.getLogger(__name__)

META_ORDER_CHOICES = ChoiceEnum(["first", "second"])


@dataclass
class MetaOptimizerConfig(FairseqDataclass):
    inner_lr: float = field(
        default=1e-3,
        metadata={
            "help": "learning rate α of the plain-SGD inner (meta-train) steps: "
            "θ_j = θ_(j-1) − α ∇L(θ_(j-1); B_j); must be > 0"
        },
    )
    meta_order: META_ORDER_CHOICES = field(
        default="first",
        metadata={
            "help": "first: the meta-gradient is the gradient at θ_k; second: "
            "differentiate through the inner steps (memory grows with k)"
        },
    )
    task_name: Optional[str] = II("task._name")


class MetaOptimizer:
    """Mixin for a :class:`~fairseq.optim.FairseqOptimizer` subclass.

    The wrapped optimizer performs the *outer* step on θ with the meta-gradient,
    unchanged (all its options, state, fp16 wrappers, LR schedulers). The mixin
    adds what the inner loop reads (``inner_lr``, ``second_order``), checks the
    flags before training starts, and keeps its own counters in ``state_dict()``
    so that they survive checkpoints.
    """

    STATE_KEY = "fairseq_meta"

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        validate_inner_lr(cfg.inner_lr)
        _check_task(cfg)
        self.inner_lr = float(cfg.inner_lr)
        self.second_order = cfg.meta_order == "second"
        self.num_inner_steps = 0

    def count_inner_steps(self, n):
        self.num_inner_steps += n

    def state_dict(self):
        state = dict(super().state_dict())
        state[self.STATE_KEY] = {
            "num_inner_steps": self.num_inner_steps,
            "inner_lr": self.inner_lr,
            "meta_order": "second" if self.second_order else "first",
        }
        return state

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        state_dict = dict(state_dict)
        meta = state_dict.pop(self.STATE_KEY, None)
        super().load_state_dict(state_dict, optimizer_overrides)
        if meta is not None:
            self.num_inner_steps = meta["num_inner_steps"]
            current = "second" if self.second_order else "first"
            if meta["inner_lr"] != self.inner_lr or meta["meta_order"] != current:
                logger.warning(
                    "resuming with --inner-lr %s --meta-order %s (checkpoint had %s, %s)",
                    self.inner_lr, current, meta["inner_lr"], meta["meta_order"],
                )


def validate_inner_lr(inner_lr):
    if not inner_lr > 0:
        raise MetaConfigError(f"--inner-lr must be > 0 (got {inner_lr})")


def _check_task(cfg):
    from fairseq.tasks import TASK_REGISTRY

    try:
        task_name = cfg.task_name
    except Exception:  # no task in this config (e.g. an optimizer built by hand)
        return
    task_cls = TASK_REGISTRY.get(task_name)
    if task_cls is not None and not getattr(task_cls, "is_meta_task", False):
        raise MetaConfigError(
            f"--optimizer {cfg._name} runs inner meta-train steps, which task "
            f"'{task_name}' does not provide; use a meta task (--task meta_masked_lm "
            "or meta_sentence_prediction) or a plain optimizer (e.g. --optimizer adam)"
        )


def find_meta_optimizer(optimizer):
    """The :class:`MetaOptimizer` inside fairseq's precision wrappers, or None.

    FP16Optimizer keeps it as ``.fp32_optimizer``, MemoryEfficientFP16Optimizer
    and AMPOptimizer as ``.wrapped_optimizer``.
    """
    seen = 0
    while optimizer is not None and seen < 4:
        if isinstance(optimizer, MetaOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "fp32_optimizer", None) or getattr(
            optimizer, "wrapped_optimizer", None
        )
        seen += 1
    return None
