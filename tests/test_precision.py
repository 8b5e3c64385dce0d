"""Mixed precision in the inner loop, on CPU with fairseq's own precision wrappers
built directly (FP16Optimizer needs --fp16-no-flatten-grads off CUDA):

- inner gradients are taken of the loss times the wrapper's loss scale and
  unscaled before the inner step (compared with a by-hand computation);
- an overflow in an inner step leaves θ as it was, and fairseq's own overflow
  check then skips the update and lowers the loss scale;
- θ is restored bit for bit with fp16 weights, with and without an fp32 master
  copy (FP16Optimizer, MemoryEfficientFP16Optimizer), and with bf16.
"""
import copy
import logging

import pytest
import torch
from conftest import META, TINY_ROBERTA
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.optim.fp16_optimizer import FP16Optimizer, MemoryEfficientFP16Optimizer

from fairseq_meta.errors import MetaConfigError
from fairseq_meta.meta_learning import loss_scale
from fairseq_meta.optim.meta_optimizer import find_meta_optimizer

INNER_LR = 0.1


def build(corpus, wrapper, precision, k=1, order="first", init_scale=128, extra=()):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(corpus), *META, *TINY_ROBERTA, "--meta-train-steps", str(k), "--meta-order", order,
        "--inner-lr", str(INNER_LR), "--dropout", "0", "--attention-dropout", "0",
        "--tokens-per-sample", "32", "--batch-size", "3", "--cpu", "--seed", "1",
        f"--{precision}", "--fp16-init-scale", str(init_scale), "--fp16-no-flatten-grads", *extra,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model = model.bfloat16() if precision == "bf16" else model.half()
    criterion = task.build_criterion(cfg.criterion)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = wrapper.build_optimizer(cfg.optimizer if wrapper is AMPOptimizer else cfg, params)
    task.load_dataset("train", combine=False, epoch=1)
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=3, seed=1)
    return task, model, criterion, optimizer, next(iter(itr.next_epoch_itr(shuffle=False)))


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_restored(model, theta):
    for p, t in zip(model.parameters(), theta):
        assert torch.equal(p, t)


# Second order with fp16 weights is refused (test_second_order_refuses_fp16_weights):
# LayerNorm's double-backward does not survive half precision (README, known limits).
@pytest.mark.parametrize("wrapper", [FP16Optimizer, MemoryEfficientFP16Optimizer])
@pytest.mark.parametrize("precision,order", [("fp16", "first"), ("bf16", "second")])
def test_half_precision_restores_theta_and_leaves_the_scaled_meta_gradient(
    corpus, wrapper, precision, order
):
    task, model, criterion, optimizer, episode = build(corpus, wrapper, precision, order=order)
    assert loss_scale(optimizer) == (128 if precision == "fp16" else 1.0)
    theta = weights(model)
    optimizer.zero_grad()
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert_restored(model, theta)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == next(model.parameters()).dtype for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)

    if precision == "fp16":
        # By hand: inner step on the scaled loss, unscaled; meta-test gradient scaled.
        fast = copy.deepcopy(model)
        fast.zero_grad()
        loss, sample_size, _ = criterion(fast, episode["meta_train"][0])
        (loss / sample_size * 128).backward()
        with torch.no_grad():
            for p in fast.parameters():
                p.add_(p.grad / 128, alpha=-INNER_LR)  # the same fp16 rounding as θ_j
        fast.zero_grad()
        (criterion(fast, episode["meta_test"])[0] * 128).backward()
        for got, ref in zip(grads, [p.grad for p in fast.parameters()]):
            torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("wrapper", [FP16Optimizer, MemoryEfficientFP16Optimizer])
def test_reptile_pseudo_gradient_reaches_the_outer_step_in_fp16(corpus, wrapper):
    """Reptile writes .grad without a backward: the wrapper must still unscale it and
    hand it to the fp32 step (FP16Optimizer syncs its masters only when told)."""
    task, model, criterion, optimizer, episode = build(corpus, wrapper, "fp16", k=1,
                                                       extra=["--meta-objective", "reptile"])
    optimizer.zero_grad()
    _, sample_size, _ = task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert sample_size == 1
    # by hand: the gradient of the normalised loss of B_1, taken scaled, in fp16
    fast = copy.deepcopy(model)
    fast.zero_grad()
    loss, n, _ = criterion(fast, episode["meta_train"][0])
    (loss / n * 128).backward()
    expected = [p.grad.float() / 128 for p in fast.parameters()]
    before = weights(model)
    optimizer.multiply_grads(1.0 / sample_size)
    optimizer.clip_grad_norm(0.0)  # no overflow
    optimizer.step()
    moved = [(p.float() - b.float()).abs().max().item() for p, b in zip(model.parameters(), before)]
    assert max(moved) > 0  # the step used the pseudo-gradient (zero gradients: no move)
    grads32 = [g for g in _master_grads(optimizer, model)]
    for got, ref in zip(grads32, expected):
        torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-4)


def _master_grads(optimizer, model):
    """The fp32 gradients the wrapped optimizer stepped with."""
    if isinstance(optimizer, FP16Optimizer):
        return [p.grad for p in optimizer.fp32_params]
    return [p.grad.float() for p in model.parameters()]


@pytest.mark.parametrize("wrapper", [FP16Optimizer, MemoryEfficientFP16Optimizer])
def test_second_order_refuses_fp16_weights(corpus, wrapper):
    task, model, criterion, optimizer, episode = build(corpus, wrapper, "fp16", order="second")
    theta = weights(model)
    with pytest.raises(MetaConfigError, match="--meta-order second cannot train with fp16 weights"):
        task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert_restored(model, theta)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("poison", [None, float("inf"), float("nan")])
def test_unscale_without_the_fused_kernel_is_the_same(monkeypatch, dtype, poison):
    """The path for dtypes torch's fused CUDA kernel lacks (bf16) gives what the
    fused kernel gives: the same unscaled gradients, the same finiteness."""
    from fairseq_meta import meta_learning

    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 3, generator=generator).to(dtype), None, torch.randn(7, generator=generator).to(dtype)]
    if poison is not None:
        grads[2][4] = poison
    fused = [None if g is None else g.clone() for g in grads]
    fused_ok = meta_learning._unscale_and_check_(fused, 64.0)
    monkeypatch.setattr(meta_learning, "_has_fused_unscale", lambda device, dtype: False)
    fallback = [None if g is None else g.clone() for g in grads]
    assert meta_learning._unscale_and_check_(fallback, 64.0) == fused_ok == (poison is None)
    for a, b in zip(fused, fallback):
        assert (a is None and b is None) or torch.equal(a, b) or (
            torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()]))


@pytest.mark.parametrize("wrapper", [FP16Optimizer, MemoryEfficientFP16Optimizer])
@pytest.mark.parametrize("order", ["first"])
@pytest.mark.parametrize("objective", ["maml", "reptile"])
def test_inner_overflow_skips_the_update_and_lowers_the_scale(corpus, wrapper, order, objective, caplog):
    # 2^40 overflows fp16 in the *inner* backward: only a scaled inner loss can.
    task, model, criterion, optimizer, episode = build(corpus, wrapper, "fp16", order=order,
                                                       init_scale=2**40,
                                                       extra=["--meta-objective", objective])
    theta = weights(model)
    optimizer.zero_grad()
    with caplog.at_level(logging.WARNING, logger="fairseq_meta.meta_learning"):
        task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert "inner step 1/1: non-finite gradient" in caplog.text
    assert_restored(model, theta)

    # What fairseq's trainer does next: the overflow check raises, the scale drops.
    optimizer.multiply_grads(1.0 / 100)
    with pytest.raises(OverflowError, match="setting loss scale to"):
        optimizer.clip_grad_norm(0.0)
    assert loss_scale(optimizer) == 2**39


def test_bf16_has_no_loss_scale_and_restores_theta(corpus):
    task, model, criterion, optimizer, episode = build(corpus, FP16Optimizer, "bf16", k=2)
    assert optimizer.scaler is None and loss_scale(optimizer) == 1.0
    theta = weights(model)
    optimizer.zero_grad()
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert_restored(model, theta)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_loss_scale_reads_amp_grad_scaler():
    """fairseq's AMPOptimizer (its own class: it also exposes the torch GradScaler
    as ``.scaler``, which has no loss_scale; built without __init__, which wants
    CUDA) and fairseq's DynamicLossScaler of the fp16 wrappers."""
    from fairseq.optim.amp_optimizer import AMPOptimizer
    from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler

    amp = object.__new__(AMPOptimizer)
    amp._grad_scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    assert loss_scale(amp) == 64.0
    amp._grad_scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert loss_scale(amp) == 1.0

    class FP16Wrapper:
        scaler = DynamicLossScaler(init_scale=8.0)

    assert loss_scale(FP16Wrapper()) == 8.0
    assert loss_scale(object()) == 1.0


@pytest.mark.parametrize("wrapper", [FP16Optimizer, MemoryEfficientFP16Optimizer])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_adam_preconditioner_reads_the_state_of_each_parameter(corpus, wrapper, precision):
    """--inner-preconditioner adam under the precision wrappers: the Adam state
    belongs to fp32 master copies (FP16Optimizer) or to the half-precision weights
    themselves (MemoryEfficientFP16Optimizer); each weight's inner step must use
    its own v̂. Planted: v̂ different for every weight; by hand: the fp32 step
    α g / (√v̂ + ε) added to the half-precision weights."""
    alpha = 1e-3
    torch.manual_seed(0)  # the model's initialisation, whatever ran before
    task, model, criterion, optimizer, episode = build(
        corpus, wrapper, precision, extra=["--inner-preconditioner", "adam", "--inner-lr", str(alpha)])
    scale = loss_scale(optimizer)
    torch_optimizer = find_meta_optimizer(optimizer).optimizer
    masters = optimizer.fp32_params if wrapper is FP16Optimizer else list(model.parameters())
    generator = torch.Generator().manual_seed(0)
    denominators = []
    for p, master in zip(model.parameters(), masters):
        v_hat = (1e-2 * (1 + torch.rand(p.shape, generator=generator))) ** 2
        torch_optimizer.state[master] = {"step": 10, "exp_avg": torch.zeros(p.shape),
                                         "exp_avg_sq": v_hat * (1 - 0.999 ** 10)}
        denominators.append(v_hat.sqrt() + 1e-8)

    theta = weights(model)
    optimizer.zero_grad()
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert_restored(model, theta)
    got = [p.grad.clone() for p in model.parameters()]

    fast = copy.deepcopy(model)
    fast.zero_grad()
    loss, sample_size, _ = criterion(fast, episode["meta_train"][0])
    (loss / sample_size * scale).backward()
    with torch.no_grad():
        for p, denominator in zip(fast.parameters(), denominators):
            # unscaled in the weights' precision, as the inner loop does, then fp32
            # clipped to Adam's step bound, max(1, 0.1 / √0.001), at fairseq's default betas
            p.add_(((p.grad / scale).float() / denominator).clamp(-0.1 / 0.001 ** 0.5, 0.1 / 0.001 ** 0.5),
                   alpha=-alpha)
    fast.zero_grad()
    (criterion(fast, episode["meta_test"])[0] * scale).backward()
    for g, (n, ref) in zip(got, fast.named_parameters()):
        torch.testing.assert_close(g, ref.grad, msg=n)
