"""A learned inner step size (Meta-SGD, Li, Zhou, Chen & Li 2017), owned by the
meta optimizer beside its inner rule (``--inner-lr-learned tensor|coordinate``).

α = exp(s), one s per weight tensor (``tensor``) or per weight (``coordinate``),
initialised to log(``--inner-lr``), so α stays positive; the inner step becomes
θ_j = θ_{j-1} − α ⊙ d_j (d_j the inner direction: the gradient, or the
Adam-preconditioned one). s is trained by its own Adam (``--inner-lr-lr``,
constant) on

- MAML: ∂L(θ_k; B_q)/∂s. First order treats each d_j as a constant, so
  ∂θ_k/∂α = −Σ_j d_j and ∂L/∂s = −α ⊙ ∇L(θ_k; B_q) ⊙ Σ_j d_j: exact for k = 1
  (d_1 = ∇L(θ; B_1) does not depend on α); for k > 1 it drops the terms through
  which α moves d_2..d_k (their dependence on θ_1..θ_{k-1}). Second order
  differentiates through every inner step and is exact for any k.
- Reptile (no meta-test batch): the losses the inner steps meet after the first,
  Σ_{j≥2} L(θ_{j-1}; B_j), with the same first-order derivative −α ⊙ ∇L(θ_{j-1}; B_j)
  ⊙ Σ_{i<j} d_i (the hypergradient of Baydin et al. 2018, "Online Learning Rate
  Adaptation with Hypergradient Descent"); k = 1 has nothing to learn from and is
  refused (:mod:`fairseq_meta.pairing`).

The gradient of s is accumulated over the update's micro-batches (MAML: of the
summed meta-test loss, divided by the total sample size; Reptile: the mean over
its terms), all-reduced over data-parallel ranks with its weight (one small extra
all-reduce per update), and applied after the outer step; an update the precision
wrapper skips (overflow) skips it too. fairseq's ``--clip-norm`` and LR schedule
do not apply to s. The state (s and its Adam) is saved in the optimizer's
checkpoint state; ``--reset-optimizer`` starts α afresh from ``--inner-lr``.
"""
import contextlib
import logging
import math

import torch

from ..errors import MetaConfigError

logger = logging.getLogger(__name__)


def at_least_fp32(dtype):
    """The dtype that sums and learned step sizes of *dtype* weights are kept in: fp32
    for half-precision weights, float64 for float64 ones (the gradient checks)."""
    return torch.promote_types(dtype, torch.float32)


class LearnedInnerLR:
    def __init__(self, granularity, initial_lr, lr):
        self.granularity = granularity
        self.initial_lr = initial_lr
        self.lr = lr
        self.log_lrs = None  # one leaf tensor (≥ fp32) per θ parameter, created at first use
        self.adam = None
        self._pending_state = None
        self._grad_sum, self._weight = None, 0.0

    def _shape(self, p):
        return p.shape if self.granularity == "coordinate" else (1,) * p.dim()

    def _ensure(self, params):
        if self.log_lrs is None:
            self.log_lrs = [
                torch.full(self._shape(p), math.log(self.initial_lr), device=p.device,
                           dtype=at_least_fp32(p.dtype)).requires_grad_()
                for p in params
            ]
            self.adam = torch.optim.Adam(self.log_lrs, lr=self.lr)
            if self._pending_state is not None:
                self._load(self._pending_state)
                self._pending_state = None
        elif len(self.log_lrs) != len(params) or any(
                s.shape != self._shape(p) for s, p in zip(self.log_lrs, params)):
            raise MetaConfigError(
                "--inner-lr-learned: the learned step sizes do not match the model's weights "
                f"({len(self.log_lrs)} tensors for {len(params)} weights)"
            )

    def rates(self, params, differentiable=False):
        """α per parameter. *differentiable*: tensors, functions of s (second
        order, whose backward then fills s.grad). Else constants: Python floats
        per tensor (one host sync per episode; a scalar step is one fused kernel
        for all weights), tensors shaped like the weights per coordinate."""
        self._ensure(params)
        if differentiable:
            return [s.exp() for s in self.log_lrs]
        with torch.no_grad():
            if self.granularity == "tensor":
                return torch.cat([s.detach().reshape(1) for s in self.log_lrs]).exp().tolist()
            return [s.detach().exp() for s in self.log_lrs]

    def begin_micro_batch(self, params):
        """Start a new update's accumulation when fairseq has just zeroed the
        gradients (every precision wrapper's ``zero_grad`` sets θ's ``.grad`` to
        None; FP16Optimizer's does not call the wrapped optimizer's, so this
        cannot hook ``zero_grad`` itself)."""
        self._ensure(params)
        if self._grad_sum is None or all(p.grad is None for p in params):
            self._grad_sum = [torch.zeros_like(s, requires_grad=False) for s in self.log_lrs]
            self._weight = 0.0

    @torch.no_grad()
    def add_first_order_(self, i, grad, moved, alpha, scale=1.0):
        """∂/∂s_i += −α ⊙ grad ⊙ moved / scale (*moved* = Σ d_j of the inner steps
        that reached this parameter; *grad* its gradient, loss-scaled by *scale*;
        *alpha* as :meth:`rates` gives it)."""
        target = self._grad_sum[i]
        g = grad if grad.dtype == moved.dtype else grad.to(moved.dtype)
        if self.granularity == "tensor":  # a dot product: no weight-sized temporary
            target.add_(torch.dot(g.reshape(-1), moved.reshape(-1)).to(target.dtype),
                        alpha=-alpha / scale)
        else:
            target.addcmul_(g * moved, alpha, value=-1.0 / scale)

    @torch.no_grad()
    def add_grad_(self, i, grad, scale=1.0):
        """∂/∂s_i += grad / scale (*grad*: s_i's own gradient, loss-scaled)."""
        self._grad_sum[i].add_(grad.to(self._grad_sum[i].dtype), alpha=1.0 / scale)

    def add_weight(self, weight):
        self._weight += float(weight)

    @contextlib.contextmanager
    def meta_test_hooks(self, params, moved, alphas, scale):
        """First-order MAML: while the meta-test backward runs, add each
        parameter's contribution from its local gradient. Tensor hooks run before
        the gradient is accumulated into ``.grad`` and before c10d's reduction,
        so they see this micro-batch's gradient on this rank only."""
        handles = []
        for i, (p, m, a) in enumerate(zip(params, moved, alphas)):
            if m is not None:
                handles.append(p.register_hook(
                    lambda g, i=i, m=m, a=a: self.add_first_order_(i, g, m, a, scale)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def accumulated_grad(self):
        """This rank's ∂L/∂s so far in the update (sum / weight), or None."""
        if self._grad_sum is None or self._weight <= 0:
            return None
        return [g / self._weight for g in self._grad_sum]

    def step(self):
        """Apply the update's accumulated gradient of s (after the outer step)."""
        if self._grad_sum is None:
            return
        grads, weight = self._grad_sum, self._weight
        self._grad_sum, self._weight = None, 0.0
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            from fairseq.distributed import utils as distributed_utils

            flat = torch.cat([g.flatten() for g in grads] +
                             [torch.tensor([weight], device=grads[0].device)])
            distributed_utils.all_reduce(flat, group=distributed_utils.get_data_parallel_group())
            weight = float(flat[-1])
            grads = list(torch.split(flat[:-1], [g.numel() for g in grads]))
            grads = [g.view(s.shape) for g, s in zip(grads, self.log_lrs)]
        if weight <= 0:
            return
        for s, g in zip(self.log_lrs, grads):
            s.grad = g / weight
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)

    def stats(self):
        """Mean, min and max of α over its entries (tensors or weights)."""
        if self.log_lrs is None:
            return None
        with torch.no_grad():
            flat = torch.cat([s.detach().flatten() for s in self.log_lrs]).exp()
            return {"inner_lr_mean": float(flat.mean()), "inner_lr_min": float(flat.min()),
                    "inner_lr_max": float(flat.max())}

    def state_dict(self):
        if self.log_lrs is None:
            return self._pending_state
        return {"granularity": self.granularity,
                "log_lrs": [s.detach().clone() for s in self.log_lrs],
                "adam": self.adam.state_dict()}

    def load_state_dict(self, state):
        if state is None:
            return
        if state.get("granularity") != self.granularity:
            logger.warning("resuming with --inner-lr-learned %s (checkpoint had %s): α starts "
                           "afresh from --inner-lr", self.granularity, state.get("granularity"))
            return
        if self.log_lrs is None:
            self._pending_state = state
        else:
            self._load(state)

    def _load(self, state):
        with torch.no_grad():
            for s, saved in zip(self.log_lrs, state["log_lrs"]):
                s.copy_(saved)
        self.adam.load_state_dict(state["adam"])
