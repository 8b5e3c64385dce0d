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
first_order)`` own their update rule). ``--inner-preconditioner adam`` is such a
rule: it changes :meth:`MetaOptimizer.inner_direction` only, dividing the inner
gradient by √v̂ + ε read from the outer Adam's state, so that α is in the units
of ``--lr`` (an inner step of α moves each weight by about α, as an outer Adam
step of lr does).

A concrete meta optimizer is three lines: see :mod:`.meta_adam`.
"""
import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..errors import MetaConfigError
from ..pairing import check_pairing
from .learned_inner_lr import LearnedInnerLR

logger = logging.getLogger(__name__)

META_ORDER_CHOICES = ChoiceEnum(["first", "second"])
INNER_PRECONDITIONER_CHOICES = ChoiceEnum(["none", "adam"])
INNER_LR_LEARNED_CHOICES = ChoiceEnum(["none", "tensor", "coordinate"])


@dataclass
class MetaOptimizerConfig(FairseqDataclass):
    inner_lr: float = field(
        default=1e-3,
        metadata={
            "help": "learning rate α of the inner (meta-train) steps: "
            "θ_j = θ_(j-1) − α ∇L(θ_(j-1); B_j) (plain SGD), or α ∇L / (√v̂ + ε) with "
            "--inner-preconditioner adam, where α is in the units of --lr; must be > 0"
        },
    )
    inner_preconditioner: INNER_PRECONDITIONER_CHOICES = field(
        default="none",
        metadata={
            "help": "none: plain-SGD inner steps; adam: divide the inner gradient by "
            "√v̂ + ε, v̂ the outer Adam's bias-corrected second moment (read, never "
            "updated, during the episode; ε = --adam-eps), so that --inner-lr is in "
            "the units of --lr; each coordinate's step is bounded as Adam's is, by "
            "max(1, (1-β1)/√(1-β2)) × --inner-lr. A parameter without Adam state yet "
            "(the first update) takes a plain-SGD step"
        },
    )
    meta_order: META_ORDER_CHOICES = field(
        default="first",
        metadata={
            "help": "first: the meta-gradient is the gradient at θ_k; second: "
            "differentiate through the inner steps (memory grows with k)"
        },
    )
    inner_lr_learned: INNER_LR_LEARNED_CHOICES = field(
        default="none",
        metadata={
            "help": "learn α (Meta-SGD, Li et al. 2017): none: α = --inner-lr throughout; "
            "tensor: one α per weight tensor; coordinate: one α per weight. α = exp(s), s "
            "initialised to log(--inner-lr) and trained by its own Adam (--inner-lr-lr) on "
            "the meta-gradient ∂L/∂s"
        },
    )
    inner_lr_lr: float = field(
        default=1e-3,
        metadata={
            "help": "learning rate of the Adam that trains log α (--inner-lr-learned); "
            "constant (no --lr-scheduler), so log α moves by at most about this much per "
            "update; must be > 0"
        },
    )
    # Read for the pairing check only (fairseq_meta.pairing).
    task_name: Optional[str] = II("task._name")
    meta_objective: Optional[str] = II("oc.select:task.meta_objective,null")
    meta_train_steps: Optional[int] = II("oc.select:task.meta_train_steps,null")


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
        # a plain str: the choice enum would not pickle into checkpoints
        preconditioner = str(getattr(cfg, "inner_preconditioner", "none"))
        if preconditioner == "adam":
            if not hasattr(cfg, "adam_eps"):
                raise MetaConfigError(
                    f"--inner-preconditioner adam needs an Adam outer optimizer "
                    f"(--optimizer meta_adam), got --optimizer {cfg._name}"
                )
            if getattr(cfg, "fp16_adam_stats", False):
                raise MetaConfigError(
                    "--inner-preconditioner adam cannot read --fp16-adam-stats "
                    "(its second moments are stored scaled); drop one of the two"
                )
        super().__init__(cfg, params)
        self.inner_preconditioner = preconditioner
        if not cfg.inner_lr > 0:
            raise MetaConfigError(f"--inner-lr must be > 0 (got {cfg.inner_lr})")
        self.inner_lr_learned = str(getattr(cfg, "inner_lr_learned", "none"))
        if self.inner_lr_learned != "none" and not cfg.inner_lr_lr > 0:
            raise MetaConfigError(f"--inner-lr-lr must be > 0 (got {cfg.inner_lr_lr})")
        check_pairing(task_name=_task_setting(cfg, "task_name"), optimizer_name=cfg._name,
                      meta_objective=_task_setting(cfg, "meta_objective"),
                      meta_train_steps=_task_setting(cfg, "meta_train_steps"),
                      meta_order=str(cfg.meta_order), inner_lr_learned=self.inner_lr_learned)
        self.inner_lr = float(cfg.inner_lr)
        self.second_order = cfg.meta_order == "second"
        self.learned_inner_lr = (
            LearnedInnerLR(self.inner_lr_learned, self.inner_lr, float(cfg.inner_lr_lr))
            if self.inner_lr_learned != "none" else None)
        self.num_inner_steps = 0
        self._outer = None  # the precision wrapper of this episode (see episode())
        self._moments = None  # id(param) -> (v, bias correction, ε), per episode
        self._rates = None  # (differentiable, learned α per parameter), per episode
        self._warned_no_state = False

    @contextlib.contextmanager
    def episode(self, outer_optimizer):
        """Bracket one episode's inner steps. *outer_optimizer* is the object the
        task was handed (fairseq's precision wrapper, or this optimizer): under
        ``--fp16`` θ's parameters are fp16 and the Adam state belongs to their fp32
        master copies, which only the wrapper can map. The outer state is read
        once per episode and not written during it: the preconditioner is a
        constant of the episode."""
        self._outer, self._moments, self._rates = outer_optimizer, None, None
        try:
            yield self
        finally:
            self._outer, self._moments, self._rates = None, None, None

    def inner_lrs(self, params, differentiable=False):
        """α for each of θ's *params* in this episode: the learned ones (read once
        per episode; *differentiable*: as functions of log α, for second order),
        or None when α is the constant ``--inner-lr``."""
        if self.learned_inner_lr is None:
            return None
        if self._rates is None or self._rates[0] != differentiable:
            self._rates = (differentiable, self.learned_inner_lr.rates(params, differentiable))
        return self._rates[1]

    def inner_direction(self, params, grads):
        """The direction the inner step moves each parameter against. *params*
        are θ's parameters in the order of *grads* (None where the mini-batch does
        not reach one). ``none``: the gradient. ``adam``: g / (√v̂ + ε) in fp32,
        with v̂ the outer Adam's bias-corrected second moment of that parameter,
        each coordinate clipped to Adam's own step bound (max(1, (1 − β1) / √(1 − β2)));
        a parameter without Adam state keeps the plain gradient."""
        if self.inner_preconditioner != "adam":
            return grads
        if self._moments is None:
            self._moments = self._read_second_moments(params)
        directions = []
        for p, g in zip(params, grads):
            moment = self._moments.get(id(p))
            if g is None or moment is None:
                directions.append(g)
                continue
            v, bias_correction, eps, bound = moment
            # √v̂ + ε with v̂ = v / (1 − β2^t): a constant (no graph through it).
            denom = (v.sqrt() / math.sqrt(bias_correction)).add_(eps)
            # v̂ is stale for a coordinate whose gradient was zero for a while (an
            # embedding row of a token the recent batches did not hold; every row
            # not in the first batch has v̂ = 0): g / ε would throw θ far away. Adam
            # itself never steps a coordinate by more than `bound` × lr (Kingma &
            # Ba, 2015, sec. 2.1), so neither does the inner step.
            directions.append((g.float() / denom).clamp(-bound, bound))
        return directions

    def _read_second_moments(self, params):
        state_of = _outer_state_keys(self._outer if self._outer is not None else self, params)
        group_of = {id(q): group for group in self.optimizer.param_groups for q in group["params"]}
        moments, missing = {}, 0
        for p in params:
            key, view = state_of.get(id(p), (p, None))
            state = self.optimizer.state.get(key) or {}
            if "exp_avg_sq" not in state:
                missing += 1
                continue
            group = group_of[id(key)]
            step = float(state["step"])
            v = state["exp_avg_sq"]
            if view is not None:
                offset, numel = view
                v = v.view(-1).narrow(0, offset, numel).view(p.shape)
            beta1, beta2 = group["betas"]
            bound = max(1.0, (1.0 - beta1) / math.sqrt(1.0 - beta2))
            moments[id(p)] = (v, 1.0 - beta2 ** step, group["eps"], bound)
        if missing and not self._warned_no_state:
            self._warned_no_state = True
            logger.warning(
                "--inner-preconditioner adam: the outer Adam has no second moment yet for "
                "%d of %d parameters (the first update of a run, or after --reset-optimizer); "
                "their inner steps are plain SGD with --inner-lr until it has", missing, len(params),
            )
        return moments

    @torch.no_grad()
    def inner_step_(self, params, grads, count=True):
        """θ ← θ − α d, in place (first order); untouched parameters keep their value.
        *count*: whether the step counts toward ``num_inner_steps`` (training
        episodes do; adapted validation does not). Returns the directions d
        (None where a parameter was not reached)."""
        directions = self.inner_direction(params, grads)
        touched = [(p, d, i) for i, (p, d) in enumerate(zip(params, directions)) if d is not None]
        if touched:
            # fp32 directions (preconditioned) onto half-precision weights: the step
            # α d is formed in fp32 and rounded once, when it is added.
            rates = self.inner_lrs(params)
            if rates is None:
                torch._foreach_add_([p for p, _, _ in touched], [d for _, d, _ in touched],
                                    alpha=-self.inner_lr)
            elif self.learned_inner_lr.granularity == "tensor":  # floats
                steps = torch._foreach_mul([d for _, d, _ in touched], [-rates[i] for _, _, i in touched])
                torch._foreach_add_([p for p, _, _ in touched], steps)
            else:
                torch._foreach_addcmul_([p for p, _, _ in touched], [d for _, d, _ in touched],
                                        [rates[i] for _, _, i in touched], value=-1.0)
        if count:
            self.num_inner_steps += 1
        return directions

    def inner_step(self, params, weights, grads):
        """θ_j = θ_{j-1} − α d as new tensors, differentiable (second order, also
        in a learned α); *weights* are θ_{j-1}, *params* θ's parameters they stand for."""
        directions = self.inner_direction(params, grads)
        self.num_inner_steps += 1
        rates = self.inner_lrs(params, differentiable=True) or [self.inner_lr] * len(params)
        return [w if d is None else w - (rate * d).to(w.dtype)
                for w, d, rate in zip(weights, directions, rates)]

    def step(self, *args, **kwargs):
        """The outer step, then (``--inner-lr-learned``) the step of log α."""
        super().step(*args, **kwargs)
        if self.learned_inner_lr is not None:
            self.learned_inner_lr.step()

    def state_dict(self):
        state = dict(super().state_dict())
        state[self.STATE_KEY] = {
            "num_inner_steps": self.num_inner_steps,
            "inner_lr": self.inner_lr,
            "meta_order": "second" if self.second_order else "first",
            "inner_preconditioner": self.inner_preconditioner,
        }
        if self.learned_inner_lr is not None:
            state[self.STATE_KEY]["learned_inner_lr"] = self.learned_inner_lr.state_dict()
        return state

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        state_dict = dict(state_dict)
        meta = state_dict.pop(self.STATE_KEY, None)
        super().load_state_dict(state_dict, optimizer_overrides)
        if meta is not None:
            self.num_inner_steps = meta["num_inner_steps"]
            if self.learned_inner_lr is not None:
                self.learned_inner_lr.load_state_dict(meta.get("learned_inner_lr"))
            current = "second" if self.second_order else "first"
            saved = (meta["inner_lr"], meta["meta_order"], meta.get("inner_preconditioner", "none"))
            if saved != (self.inner_lr, current, self.inner_preconditioner):
                logger.warning(
                    "resuming with --inner-lr %s --meta-order %s --inner-preconditioner %s "
                    "(checkpoint had %s, %s, %s)",
                    self.inner_lr, current, self.inner_preconditioner, *saved,
                )


def _task_setting(cfg, key):
    """A task setting read through ``II(...)``; None where the config has no task
    (e.g. an optimizer built by hand)."""
    try:
        return getattr(cfg, key)
    except Exception:
        return None


def _outer_state_keys(outer, params):
    """id(p) -> (the tensor the outer torch optimizer keys p's state by, None or
    (offset, numel) of p inside it), for θ's parameters *params*.

    FP16Optimizer steps fp32 master copies: one per parameter
    (``--fp16-no-flatten-grads``) or one flat tensor per device holding every
    parameter in order. MemoryEfficientFP16Optimizer, AMPOptimizer and fp32
    training step θ's own parameters (their Adam state is fp32 either way).
    """
    masters = getattr(outer, "fp32_params", None)
    if masters is None:
        return {}
    fp16_params = list(outer.fp16_params)
    if isinstance(masters, dict) or torch.is_tensor(masters):
        flats = masters if isinstance(masters, dict) else {None: masters}
        keys = {}
        for device, flat in flats.items():
            members = [q for q in fp16_params if q.requires_grad and (
                len(flats) == 1 or q.device.index == device)]
            offset = 0
            for q in members:
                keys[id(q)] = (flat, (offset, q.numel()))
                offset += q.numel()
        return {id(p): keys[id(p)] for p in params if id(p) in keys}
    return {id(q): (q32, None) for q, q32 in zip(fp16_params, masters)}


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
