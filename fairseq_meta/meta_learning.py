"""The meta-learning step (Lv et al., 2020), shared by every meta task.

An *episode* is k meta-train mini-batches B_1..B_k and one meta-test
mini-batch B_q, disjoint. With θ the model weights, α the inner learning rate
and L(θ; B) the loss as fairseq normalises it (summed loss / sample size, summed
over all pre-training objectives):

    θ_0 = θ
    θ_j = θ_{j-1} − α ∇L(θ_{j-1}; B_j),        j = 1..k     (inner steps, plain SGD)
    g   = ∇_θ L(θ_k; B_q)                                   (meta-gradient)

*Second order* differentiates g through the k inner steps. *First order* treats
θ_k − θ as a constant, so g = ∂L(θ_k; B_q)/∂θ_k, the plain gradient at θ_k.

With ``--inner-preconditioner adam`` the inner step is preconditioned by the outer
Adam's second moment, read at the start of the episode and held fixed through it:

    θ_j = θ_{j-1} − α ∇L(θ_{j-1}; B_j) / (√v̂ + ε),   v̂ = v / (1 − β2^t)

(v the outer Adam's ``exp_avg_sq`` after its t-th step, ε its ``--adam-eps``;
the division is element-wise). √v̂ + ε does not depend on θ within the episode,
so both orders treat it as a constant; a parameter that has no Adam state yet
(the first update) takes the plain-SGD step. α is then in the units of ``--lr``.

What the inner steps did (every ``--log-adaptation-interval`` updates): the
*adaptation gain* L(θ; B_q) − L(θ_k; B_q) (the query loss before the inner steps
minus after them, per objective; one extra forward without gradient at θ, with
the dropout masks of the meta-test forward) and the *inner move*
‖θ_k − θ‖ / ‖θ‖. The task logs the outer step's ‖Δθ‖ / ‖θ‖ beside them.

*Reptile* (``--meta-objective reptile``; Nichol, Achiam & Schulman 2018): the
episode is k mini-batches B_1..B_k, all inner steps, none held back; the outer
optimizer receives

    g = (θ − θ_k) / (k α) = (1/k) Σ_j d_j                    (d_j the inner direction)

accumulated as the mean of the k directions, never as a difference of weights
(which cancels catastrophically in float32). With k = 1 and plain SGD,
g = ∇L(θ; B_1): ordinary training. With a learned α (``--inner-lr-learned``,
:mod:`fairseq_meta.optim.learned_inner_lr`) the inner step is θ_j = θ_{j-1} −
α ⊙ d_j and the same backward also yields ∂L/∂ log α.

Who does what: the task chooses the episode (k, the mini-batches); this module
computes each ∇L(θ_{j-1}; B_j) and hands it to the meta optimizer, which owns
the inner update θ_{j-1} → θ_j (α, the order, and any preconditioning:
:mod:`fairseq_meta.optim.meta_optimizer`); the outer step on g is fairseq's.

:func:`meta_train_step` leaves in ``p.grad`` exactly what
``optimizer.backward(loss)`` of the meta-test loss would leave there (summed over
B_q, loss-scaled under fp16), and leaves ``p`` holding θ bit for bit. Reptile
leaves k·g there (loss-scaled) and returns sample size k, so that fairseq's
division by the update's total sample size averages the pseudo-gradients of all
episodes (``--update-freq``) and ranks.
Everything fairseq's trainer does after ``task.train_step`` (all-reduce,
division by the sample size, clipping, overflow checks, the outer optimizer step
on θ, LR schedule) is therefore untouched. With k = 0 it *is*
``FairseqTask.train_step``.

Precision: inner gradients are taken of the loss times the wrapper's loss scale
(fp16, AMP) and unscaled before the inner step. A non-finite inner gradient
stops the episode, θ is restored, and the meta-test backward is made NaN, so that
fairseq's own outer checks decide: skip the update and lower the loss scale
under fp16/AMP, FloatingPointError (crash.pt holds θ) in fp32.
"""
import contextlib
import logging

import torch
from fairseq.distributed import LegacyDistributedDataParallel, ModuleProxyWrapper
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import FairseqTask
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel

from .errors import MetaConfigError
from .optim.learned_inner_lr import at_least_fp32
from .optim.meta_optimizer import find_meta_optimizer

logger = logging.getLogger(__name__)


def meta_train_step(task, episode, model, criterion, optimizer, update_num, ignore_grad):
    """Forward and backward of one episode ``{"meta_train": [B_1..B_k], "meta_test": B_q}``.

    Returns ``(loss, sample_size, logging_output)`` of B_q at θ_k, as
    ``FairseqTask.train_step`` does; the logging output also carries the first
    meta-train batch's loss before adaptation (keys ``meta_train_*``) and the
    episode's token count (``episode_ntokens``); on updates that measure the
    adaptation, the query losses at θ and θ_k (``adapt_before_*``,
    ``adapt_after_*``, sizes ``adapt_*``) and ‖θ_k − θ‖², ‖θ‖² (``inner_move_sq``,
    ``theta_norm_sq``), which :meth:`MetaTask.reduce_metrics` turns into metrics.
    """
    meta_train, meta_test = episode["meta_train"], episode["meta_test"]
    reptile = meta_test is None
    if not meta_train:
        loss, sample_size, log = FairseqTask.train_step(
            task, meta_test, model, criterion, optimizer, update_num, ignore_grad
        )
        return loss, sample_size, dict(log, episode_ntokens=log.get("ntokens", 0))
    inner = find_meta_optimizer(optimizer)
    if inner is None:
        raise MetaConfigError(
            f"--meta-train-steps {len(meta_train)} needs a meta optimizer for its inner "
            f"steps (e.g. --optimizer meta_adam), got {type(optimizer).__name__}"
        )
    if inner.second_order:
        _check_second_order_precision(model)
    model.train()
    model.set_num_updates(update_num)
    measure = _measures_adaptation(task, update_num)
    if inner.learned_inner_lr is not None:
        inner.learned_inner_lr.begin_micro_batch([p for p in model.parameters() if p.requires_grad])
    with inner.episode(optimizer):
        if reptile:
            return _reptile(meta_train, model, criterion, optimizer, inner, ignore_grad, measure)
        if inner.second_order:
            loss, sample_size, log, meta_train_logs = _second_order(
                meta_train, meta_test, model, criterion, optimizer, inner, ignore_grad, measure
            )
        else:
            loss, sample_size, log, meta_train_logs = _first_order(
                task, meta_train, meta_test, model, criterion, optimizer, inner, update_num,
                ignore_grad, measure,
            )
    return loss, sample_size, _with_meta_train_logs(log, meta_train_logs)


def _check_second_order_precision(model):
    """Second order differentiates the inner gradients, and LayerNorm's double
    backward does not survive fp16: NaN on CPU (torch 2.13, found with
    detect_anomaly), and on an H100 (torch 2.11) every update overflowed down to
    fairseq's minimum loss scale, math attention kernel or not. Refused at the
    first update rather than after a run of skipped ones. bf16 and --amp (fp32
    weights, fp16 autocast) train (tests/test_cuda.py)."""
    weight = next((p for p in model.parameters() if p.requires_grad), None)
    if weight is not None and weight.dtype == torch.float16:
        raise MetaConfigError(
            "--meta-order second cannot train with fp16 weights (--fp16, "
            "--memory-efficient-fp16): every update overflows in the double backward; "
            "use --amp, bf16 (fairseq-hydra-train common.bf16=true), fp32, or --meta-order first"
        )


def _measures_adaptation(task, update_num):
    """Whether this update measures what its inner steps did: the last update of
    every ``--log-adaptation-interval`` (so that with an interval dividing
    ``--log-interval`` every log row holds a measurement)."""
    interval = getattr(getattr(task, "cfg", None), "log_adaptation_interval", 0) or 0
    return interval > 0 and (update_num + 1) % interval == 0


def _first_order(task, meta_train, meta_test, model, criterion, optimizer, inner, update_num,
                 ignore_grad, measure=False):
    # Adapt θ in place (one saved copy of θ, no second graph), then run B_q as an
    # ordinary train step at θ_k: its backward is the one that fills .grad, so DDP
    # hooks, loss scaling and --update-freq accumulation behave as usual.
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    inner_model = unwrap_data_parallel(model)
    learned = inner.learned_inner_lr
    # A learned α needs Σ_j d_j, the inner steps' sum of directions, per parameter.
    steps_sum = [None] * len(params) if learned is not None else None
    meta_train_logs, overflow, moved = [], False, None
    try:
        for log, finite in _inner_steps_(inner_model, criterion, meta_train, params, inner,
                                         optimizer, ignore_grad, steps_sum=steps_sum):
            meta_train_logs.append(log)
            if not finite:
                overflow = True
                break
        # Here params hold θ_k and theta holds θ.
        if overflow:
            _restore_(params, theta)
            loss, sample_size, log = _poisoned_meta_test_step(model, criterion, meta_test, optimizer)
        else:
            rng = _rng_state(params[0].device) if measure else None
            hooks = contextlib.nullcontext() if learned is None else learned.meta_test_hooks(
                params, steps_sum, inner.inner_lrs(params), loss_scale(optimizer))
            with hooks:
                loss, sample_size, log = FairseqTask.train_step(
                    task, meta_test, model, criterion, optimizer, update_num, ignore_grad
                )
            if learned is not None:
                learned.add_weight(sample_size)
            if measure:
                moved = _inner_move(params, theta)
    finally:
        # Also on errors: a crash checkpoint must hold θ, never θ_k.
        _restore_(params, theta)
    if moved is not None:
        log = dict(log, **moved, **_adaptation_gain(criterion, inner_model, meta_test, optimizer, rng, log))
    return loss, sample_size, log, meta_train_logs


def _inner_steps_(model, criterion, batches, params, inner, optimizer, ignore_grad, count=True,
                  steps_sum=None, on_step=None):
    """The first-order inner loop, in place on *params*: yields (the logging
    output of B_j at θ_{j-1}, whether its gradient was finite) after each step;
    stops after a non-finite gradient, leaving θ_{j-1} in *params*.

    *steps_sum*: a list (None per parameter to start) that receives Σ_j d_j in
    fp32. *on_step(j, grads, directions)*: called after each inner step, before
    *steps_sum* adds its direction (so it still holds Σ_{i<j} d_i)."""
    scale = loss_scale(optimizer)
    for j, batch in enumerate(batches, 1):
        loss, sample_size, log = _forward(criterion, model, batch, optimizer)
        grads = torch.autograd.grad(
            _normalized(loss, sample_size, ignore_grad) * scale, params, allow_unused=True
        )
        if not _unscale_and_check_(grads, scale):
            _report_overflow(j, len(batches), scale)
            yield log, False
            return
        directions = inner.inner_step_(params, grads, count=count)
        if on_step is not None:
            on_step(j, grads, directions)
        if steps_sum is not None:
            _accumulate_(steps_sum, directions)
        # Free the inner gradients now, not at the next assignment: otherwise
        # they live through the next forward/backward and peak memory holds
        # one more copy of the parameters.
        del grads, loss, directions
        yield log, True


@torch.no_grad()
def _accumulate_(sums, directions):
    """sums[i] += d_i (at least fp32, created at a parameter's first direction).
    The first direction itself becomes the sum when it is already fp32/fp64:
    directions are fresh tensors that nothing reads after their step."""
    for i, d in enumerate(directions):
        if d is None:
            continue
        if sums[i] is None:
            sums[i] = d.to(at_least_fp32(d.dtype))  # d itself if already ≥ fp32
        else:
            sums[i].add_(d)


def _reptile(batches, model, criterion, optimizer, inner, ignore_grad, measure):
    # The k inner steps in place on θ (one saved copy of θ); each direction d_j is
    # added, loss-scaled, straight into .grad, which therefore ends up holding
    # k·g = Σ_j d_j on top of earlier micro-batches: no buffer beyond θ's copy.
    # Nothing here runs a forward through the data-parallel wrapper, so c10d's
    # reducer is never armed; _reduce_like_ddp_ does its one all-reduce instead.
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    inner_model = unwrap_data_parallel(model)
    scale = loss_scale(optimizer)
    k = len(batches)
    learned = inner.learned_inner_lr
    steps_sum = [None] * len(params) if learned is not None else None

    def on_step(j, grads, directions):
        _add_to_grads_(params, directions, scale)
        if learned is not None and j > 1:
            # ∂L(θ_{j-1}; B_j)/∂ log α = −α ⊙ ∇L(θ_{j-1}; B_j) ⊙ Σ_{i<j} d_i
            alphas = inner.inner_lrs(params)
            for i, (g, m) in enumerate(zip(grads, steps_sum)):
                if g is not None and m is not None:
                    learned.add_first_order_(i, g, m, alphas[i])
            learned.add_weight(1)

    logs, finite, rng, moved = [], True, None, None
    try:
        for log, finite in _inner_steps_(inner_model, criterion, batches, params, inner,
                                         optimizer, ignore_grad, steps_sum=steps_sum,
                                         on_step=on_step):
            logs.append(log)
            if not finite:
                break
            if measure and len(logs) == k - 1:
                # B_k's forward comes next: the gain is measured on it (at θ_{k-1}
                # after the others, at θ before them), with the same dropout masks.
                rng = _rng_state(params[0].device)
        if measure and finite:
            moved = _inner_move(params, theta)
    finally:
        _restore_(params, theta)
    if not finite:
        _poison_grads_(params)
    _announce_written_grads(optimizer)
    _reduce_like_ddp_(model, params)
    log = _with_meta_train_logs(logs[0], logs, meta_test_counted=False)
    if moved is not None:
        log.update(moved)
        if rng is not None:
            log.update(_adaptation_gain(criterion, inner_model, batches[-1], optimizer, rng, logs[-1]))
    return torch.zeros(()), 0 if ignore_grad else k, log


@torch.no_grad()
def _add_to_grads_(params, directions, scale):
    """p.grad += scale · d (in p.grad's dtype, loss-scaled as a backward would be)."""
    for p, d in zip(params, directions):
        if d is None:
            continue
        if p.grad is None:
            p.grad = (d * scale).to(p.dtype)
        else:
            p.grad.add_(d, alpha=scale)


@torch.no_grad()
def _poison_grads_(params):
    """Every gradient NaN, so that fairseq's own checks take over, as
    :func:`_poisoned_meta_test_step` does for MAML."""
    for p in params:
        p.grad = torch.full_like(p, float("nan"))


def _announce_written_grads(optimizer):
    """FP16Optimizer copies θ's fp16 gradients into its fp32 master copies only
    when its own ``backward`` has flagged them (``_needs_sync``); Reptile writes
    ``.grad`` without a backward, so it raises the flag itself (found by
    tests/test_precision.py: otherwise the update saw zero gradients)."""
    if hasattr(optimizer, "_needs_sync"):
        optimizer._needs_sync = True


@torch.no_grad()
def _reduce_like_ddp_(model, params):
    """Under torch's DistributedDataParallel (``--ddp-backend c10d``/pytorch_ddp),
    average ``.grad`` over the ranks as its reducer would have in a backward:
    one all-reduce of all gradients (zeros where a rank has none, so that every
    rank sends the same layout), on the update's last micro-batch only (outside
    ``no_sync``). legacy_ddp needs nothing: fairseq's trainer all-reduces
    ``.grad`` itself after the last micro-batch."""
    ddp = model
    while isinstance(ddp, ModuleProxyWrapper):
        ddp = ddp.module
    if not isinstance(ddp, DistributedDataParallel) or not ddp.require_backward_grad_sync:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat, group=ddp.process_group)
    flat /= torch.distributed.get_world_size(ddp.process_group)
    for p, g in zip(params, torch.split(flat, [g.numel() for g in grads])):
        p.grad = g.view_as(p).clone()


def _second_order(meta_train, meta_test, model, criterion, optimizer, inner, ignore_grad,
                  measure=False):
    # θ_1..θ_k are non-leaf functions of θ (create_graph=True), the meta-test loss
    # is evaluated at θ_k through torch.func.functional_call, and one backward
    # carries the meta-gradient through all inner steps into θ's .grad. θ is never
    # written. Double backward needs the math attention kernel (flash/efficient
    # kernels have no derivative for their backward).
    inner_objective = _Objective(unwrap_data_parallel(model), criterion)
    names = [n for n, p in inner_objective.named_parameters() if p.requires_grad]
    params = [p for p in inner_objective.parameters() if p.requires_grad]
    fast = params
    scale = loss_scale(optimizer)
    meta_train_logs = []
    with sdpa_kernel(SDPBackend.MATH):
        for j, batch in enumerate(meta_train, 1):
            loss, sample_size, log = _functional_forward(inner_objective, names, fast, batch, optimizer)
            meta_train_logs.append(log)
            grads = torch.autograd.grad(
                _normalized(loss, sample_size, ignore_grad) * scale, fast,
                create_graph=True, allow_unused=True,
            )
            grads = _unscaled(grads, scale)
            if not _all_finite(grads):
                _report_overflow(j, len(meta_train), scale)
                loss, sample_size, log = _poisoned_meta_test_step(model, criterion, meta_test, optimizer)
                return loss, sample_size, log, meta_train_logs
            fast = inner.inner_step(params, fast, grads)
        # Here fast holds θ_k (a function of θ) and params hold θ.
        meta_test_objective = _Objective(model, criterion)
        meta_test_names = [n for n, p in meta_test_objective.named_parameters() if p.requires_grad]
        rng = _rng_state(params[0].device) if measure else None
        loss, sample_size, log = _functional_forward(
            meta_test_objective, meta_test_names, fast, meta_test, optimizer
        )
        if ignore_grad:
            loss *= 0
        optimizer.backward(loss)
    learned = inner.learned_inner_lr
    if learned is not None:
        # The backward above also reached log α through the inner steps.
        for i, s in enumerate(learned.log_lrs):
            if s.grad is not None:
                learned.add_grad_(i, s.grad, scale)
                s.grad = None
        learned.add_weight(sample_size)
    if measure:
        log = dict(log, **_inner_move(fast, params), **_adaptation_gain(
            criterion, inner_objective.model, meta_test, optimizer, rng, log))
    return loss, sample_size, log, meta_train_logs


# Loss keys of the criteria's logging outputs whose value before and after the
# inner steps is logged (meta_masked_lm: the sum over objectives and each of them).
ADAPTATION_LOSS_KEYS = ("loss", "mlm_loss", "nsp_loss")


@torch.no_grad()
def _inner_move(adapted, theta):
    """‖θ_k − θ‖² and ‖θ‖², summed over parameters (the task logs the ratio of
    their square roots, so that episodes of several micro-batches and ranks add)."""
    moved = sum(torch.linalg.vector_norm((a.detach() - t).float()) ** 2 for a, t in zip(adapted, theta))
    norm = sum(torch.linalg.vector_norm(t.float()) ** 2 for t in theta)
    return {"inner_move_sq": float(moved), "theta_norm_sq": float(norm)}


@torch.no_grad()
def _adaptation_gain(criterion, model, meta_test, optimizer, rng, adapted_log):
    """L(θ; B_q) beside L(θ_k; B_q), per objective, as summed losses (keys
    ``adapt_before_*`` / ``adapt_after_*`` with their sizes ``adapt_*``).

    One extra forward without gradient at θ (*model* holds θ again, unwrapped so
    that no DDP reduction is armed). It replays the random state *rng* taken
    right before the meta-test forward, so that both losses see the same dropout
    masks, and puts the random state back afterwards: measuring changes neither
    the training run nor its random stream.
    """
    after = _rng_state(rng[1])
    _set_rng_state(rng)
    try:
        _, sample_size, before = _forward(criterion, model, meta_test, optimizer)
    finally:
        _set_rng_state(after)
    out = {"adapt_sample_size": adapted_log.get("sample_size", sample_size)}
    if "nsp_count" in adapted_log:
        out["adapt_nsp_count"] = adapted_log["nsp_count"]
    for key in ADAPTATION_LOSS_KEYS:
        if key in adapted_log and key in before:
            out["adapt_before_" + key] = before[key]
            out["adapt_after_" + key] = adapted_log[key]
    return out


def _rng_state(device):
    """torch's random state for *device* (the CPU generator, and the device's own on CUDA)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), device, cuda


def _set_rng_state(state):
    cpu, device, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def adapted_valid_step(model, criterion, support, batch, optimizer):
    """Validation after adaptation: the inner steps of training (the meta
    optimizer's rule, α, preconditioner) on the held-out mini-batches *support*,
    then the loss on *batch* at the adapted weights θ_K; θ is restored bit for
    bit. Runs in the caller's mode (eval: no dropout), on the unwrapped model,
    never counts toward the optimizer's inner steps and never touches ``.grad``.

    Returns ``(adapted logging output, sample size)``, or None when an inner
    gradient is not finite (that batch is then not scored).
    """
    inner = find_meta_optimizer(optimizer)
    model = unwrap_data_parallel(model)
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    try:
        with torch.enable_grad(), inner.episode(optimizer):
            for _, finite in _inner_steps_(model, criterion, support, params, inner, optimizer,
                                           ignore_grad=False, count=False):
                if not finite:
                    return None
        with torch.no_grad():
            _, sample_size, log = _forward(criterion, model, batch, optimizer)
        return log, sample_size
    finally:
        _restore_(params, theta)


def _poisoned_meta_test_step(model, criterion, meta_test, optimizer):
    """The meta-test backward with a NaN loss: every rank's meta-gradient becomes NaN
    through the same backward/all-reduce as always, so fairseq's own checks take
    over: with a loss scaler the update is skipped and the scale lowered
    (OverflowError); in fp32 training stops with FloatingPointError ("gradients
    are Nan/Inf") after saving crash.pt, which holds θ."""
    loss, sample_size, log = _forward(criterion, model, meta_test, optimizer)
    optimizer.backward(loss * float("nan"))
    return loss, sample_size, log


def _report_overflow(step, k, scale):
    logger.warning(
        "inner step %d/%d: non-finite gradient (loss scale %s); θ is kept and this update "
        "goes to fairseq's overflow handling (fp16: skipped, loss scale lowered; "
        "fp32: FloatingPointError)", step, k, scale,
    )
    return True


def loss_scale(optimizer):
    """The loss scale fairseq's precision wrapper multiplies the loss by in
    ``backward`` (1 without one). Inner gradients are taken of the scaled loss
    and unscaled before the inner step, as the outer step does."""
    # AMPOptimizer first: it also has a ``scaler`` (its torch GradScaler, which has
    # no loss_scale attribute)
    grad_scaler = getattr(optimizer, "_grad_scaler", None)
    if grad_scaler is not None:
        return float(grad_scaler.get_scale()) if grad_scaler.is_enabled() else 1.0
    scaler = getattr(optimizer, "scaler", None)  # FP16Optimizer, MemoryEfficientFP16Optimizer
    if scaler is not None:
        return float(scaler.loss_scale)
    return 1.0


def _unscaled(grads, scale):
    if scale == 1.0:
        return grads
    return [None if g is None else g / scale for g in grads]


@torch.no_grad()
def _unscale_and_check_(grads, scale):
    """g ← g / scale in place, and whether every g is finite.

    One fused kernel per (device, dtype), as torch's GradScaler does, and one
    host sync per inner step: a check per tensor cost ~3% of a small model's
    step on CPU (scripts/benchmark.py, docs/benchmarks.md). In place is safe
    because these are autograd.grad's fresh tensors (first order, no graph).
    For the usual power-of-two scales multiplying by 1/scale equals dividing.
    """
    groups, found_inf = {}, {}
    for g in grads:
        if g is not None:
            groups.setdefault((g.device, g.dtype), []).append(g)
    for (device, dtype), group in groups.items():
        flag = found_inf.setdefault(device, torch.zeros(1, device=device))
        if _has_fused_unscale(device, dtype):
            inv_scale = torch.full((1,), 1.0 / scale, dtype=torch.float32, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, flag, inv_scale)
        else:
            if scale != 1.0:
                torch._foreach_mul_(group, 1.0 / scale)
            flag.add_(torch.stack([torch.isfinite(g).all() for g in group]).logical_not().any())
    return not any(bool(flag.item()) for flag in found_inf.values())


def _has_fused_unscale(device, dtype):
    # torch's CUDA kernel has no bf16 implementation (found on an H100, torch 2.11:
    # "not implemented for 'BFloat16'"); its CPU one has.
    return device.type != "cuda" or dtype in (torch.float16, torch.float32)


def _all_finite(grads):
    checks = [torch.isfinite(g).all() for g in grads if g is not None]
    return bool(torch.stack(checks).all()) if checks else True


@torch.no_grad()
def _restore_(params, theta):
    torch._foreach_copy_(params, theta)


class _Objective(torch.nn.Module):
    """criterion(model, sample) as one module, so that functional_call swaps the
    weights for everything the criterion touches (heads, output layers), not only
    for ``model.forward``. Tied weights (RoBERTa's LM head and embeddings) stay
    tied: named_parameters lists each once and functional_call re-ties them."""

    def __init__(self, model, criterion):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, sample):
        return self.criterion(self.model, sample)


def _functional_forward(objective, names, weights, sample, optimizer):
    with _autocast(optimizer):
        return torch.func.functional_call(objective, dict(zip(names, weights)), (sample,))


def _forward(criterion, model, sample, optimizer):
    with _autocast(optimizer):
        return criterion(model, sample)


def _autocast(optimizer):
    # FairseqTask.train_step autocasts only under --amp; do the same.
    if isinstance(optimizer, AMPOptimizer):
        return torch.autocast("cuda")
    return contextlib.nullcontext()


def _normalized(loss, sample_size, ignore_grad):
    """L = summed loss / sample size; the dummy batch of an idle rank counts 0."""
    if ignore_grad:
        return loss * 0
    if torch.is_tensor(sample_size):
        return loss / sample_size.clamp(min=1).to(loss.dtype)
    return loss / max(sample_size, 1)


def unwrap_data_parallel(model):
    """The bare model inside fairseq's data-parallel wrappers.

    Inner steps run on it: their forward must not arm c10d's gradient reduction
    (only the meta-test backward is reduced, once per update).
    """
    while isinstance(
        model, (ModuleProxyWrapper, DistributedDataParallel, LegacyDistributedDataParallel)
    ):
        model = model.module
    return model


def _with_meta_train_logs(meta_test_log, meta_train_logs, meta_test_counted=True):
    """The logged losses: the meta-test batch's at θ_k (MAML) or B_1's at θ
    (Reptile, where that is the loss k = 0 would log), beside the first
    meta-train batch's (``meta_train_*``) and the episode's token count."""
    log = dict(meta_test_log)
    log.update({"meta_train_" + key: value for key, value in meta_train_logs[0].items()})
    log["episode_ntokens"] = (meta_test_log.get("ntokens", 0) if meta_test_counted else 0) + sum(
        m.get("ntokens", 0) for m in meta_train_logs
    )
    return log
