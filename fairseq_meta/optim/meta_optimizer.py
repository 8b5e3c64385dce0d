"""The meta optimizer: the outer step, and the inner update rule.

Who owns what. The *task* owns the episode: k (``--meta-train-steps``) and which
mini-batches; :func:`fairseq_meta.meta_learning.meta_train_step` computes each
inner gradient and hands it here. The *optimizer* owns how θ moves: the outer
step (the wrapped fairseq optimizer, unchanged) and the inner step θ_j =
θ_{j-1} − α ∇L(θ_{j-1}; B_j) of the equations in :mod:`fairseq_meta.meta_learning`
(``--inner-lr`` α, ``--meta-order``), counting the steps it applies. Settings
flow one way, task → optimizer; neither reads the other's settings.

Why the optimizer: an inner rule that preconditions with the outer Adam's
moments needs the outer optimizer's state, which only the optimizer holds (as
``higher``'s differentiable optimizers and learn2learn's ``MAML(model, lr,
first_order)`` own their update rule). Such a rule changes
:meth:`MetaOptimizer.inner_direction` only.

A concrete meta optimizer is three lines: see :mod:`.meta_adam`.
"""
import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..errors import MetaConfigError
from ..pairing import check_pairing

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
    # Read for the pairing check only (fairseq_meta.pairing).
    task_name: Optional[str] = II("task._name")


class MetaOptimizer:
    """Mixin for a :class:`~fairseq.optim.FairseqOptimizer` subclass.

    The wrapped optimizer performs the *outer* step on θ with the meta-gradient,
    unchanged (all its options, state, fp16 wrappers, LR schedulers). The mixin
    adds the *inner* update rule (:meth:`inner_step_` in place for first order,
    :meth:`inner_step` differentiable for second order) and keeps its count of
    inner steps in ``state_dict()`` so that it survives checkpoints.
    """

    is_meta_optimizer = True
    STATE_KEY = "fairseq_meta"

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        if not cfg.inner_lr > 0:
            raise MetaConfigError(f"--inner-lr must be > 0 (got {cfg.inner_lr})")
        check_pairing(task_name=_task_name(cfg), optimizer_name=cfg._name)
        self.inner_lr = float(cfg.inner_lr)
        self.second_order = cfg.meta_order == "second"
        self.num_inner_steps = 0

    def inner_direction(self, params, grads):
        """The direction the inner step moves each parameter against: the plain
        gradient. *params* are θ's parameters in the order of *grads* (None where
        the mini-batch does not reach one), so that a preconditioned rule can look
        up the outer optimizer's state of each."""
        return grads

    @torch.no_grad()
    def inner_step_(self, params, grads):
        """θ ← θ − α d, in place (first order); untouched parameters keep their value."""
        touched = [(p, d) for p, d in zip(params, self.inner_direction(params, grads)) if d is not None]
        if touched:
            torch._foreach_add_([p for p, _ in touched], [d for _, d in touched], alpha=-self.inner_lr)
        self.num_inner_steps += 1

    def inner_step(self, params, weights, grads):
        """θ_j = θ_{j-1} − α d as new tensors, differentiable (second order);
        *weights* are θ_{j-1}, *params* θ's parameters they stand for."""
        directions = self.inner_direction(params, grads)
        self.num_inner_steps += 1
        return [w if d is None else w - self.inner_lr * d for w, d in zip(weights, directions)]

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


def _task_name(cfg):
    try:
        return cfg.task_name
    except Exception:  # no task in this config (e.g. an optimizer built by hand)
        return None


def find_meta_optimizer(optimizer):
    """The :class:`MetaOptimizer` inside fairseq's precision wrappers, or None.

    FP16Optimizer keeps it as ``.fp32_optimizer``, MemoryEfficientFP16Optimizer
    and AMPOptimizer as ``.wrapped_optimizer``.
    """
    for _ in range(4):
        if optimizer is None or isinstance(optimizer, MetaOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "fp32_optimizer", None) or getattr(
            optimizer, "wrapped_optimizer", None
        )
    return None
