"""The meta-gradient against independent computations, on a tiny RoBERTa.

- first order: a deep copy of the model stepped with plain ``loss.backward()``
  and SGD, then the meta-test gradient at θ_k;
- second order: central finite differences of F(θ) = L(θ_k(θ); B_q) in float64;
- θ is bit-for-bit restored, inner gradients never reach ``.grad``, and with
  ``--update-freq 2`` the accumulated gradient is the sum of the two episodes'
  meta-gradients.
"""
import copy

import pytest
import torch
from conftest import META, TINY_ROBERTA, USER_DIR, assert_matches_finite_differences  # noqa: F401
from fairseq import optim, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_meta  # noqa: F401

INNER_LR = 0.5  # large, so that the second-order term is far above the tolerance


def build(corpus, k, order="first", extra=()):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(corpus), *META, *TINY_ROBERTA, "--meta-train-steps", str(k), "--meta-order", order,
        "--inner-lr", str(INNER_LR), "--dropout", "0", "--attention-dropout", "0",
        "--tokens-per-sample", "32", "--batch-size", "3", "--cpu", "--seed", "1", *extra,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    task.load_dataset("train", combine=False, epoch=1)
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=3, seed=1)
    episodes = itr.next_epoch_itr(shuffle=False)
    return task, model, criterion, optimizer, episodes


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def weights_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def meta_grad(task, model, criterion, optimizer, episode):
    model.zero_grad()
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    return grads_of(model)


def adapted_copy(model, criterion, meta_train):
    """θ_k by the book: a copy of the model, k times backward() and θ -= α grad."""
    fast = copy.deepcopy(model)
    for batch in meta_train:
        fast.zero_grad()
        loss, sample_size, _ = criterion(fast, batch)
        (loss / sample_size).backward()
        with torch.no_grad():
            for p in fast.parameters():
                if p.grad is not None:
                    p -= INNER_LR * p.grad
    return fast


def meta_test_loss(model, criterion, episode):
    return criterion(model, episode["meta_test"])[0]


@pytest.mark.parametrize("nsp", [False, True], ids=["mlm", "mlm+nsp"])
def test_first_order_equals_gradient_at_adapted_weights(corpus, nsp):
    extra = ["--sentence-objective", "nsp"] if nsp else []
    task, model, criterion, optimizer, episodes = build(corpus, k=2, extra=extra)
    episode = next(episodes)
    assert len(episode["meta_train"]) == 2

    fast = adapted_copy(model, criterion, episode["meta_train"])
    fast.zero_grad()
    meta_test_loss(fast, criterion, episode).backward()
    expected = grads_of(fast)

    got = meta_grad(task, model, criterion, optimizer, episode)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_second_order_matches_finite_differences(corpus, float64_fairseq):
    task, model, criterion, optimizer, episodes = build(corpus, k=2, order="second")
    model.double()
    episode = next(episodes)
    got = meta_grad(task, model, criterion, optimizer, episode)

    assert_matches_finite_differences(
        model, got,
        lambda shifted: meta_test_loss(adapted_copy(shifted, criterion, episode["meta_train"]),
                                       criterion, episode).item(),
        rel=1e-7)

    # The check discriminates: the first-order gradient misses the second-order term.
    fast = adapted_copy(model, criterion, episode["meta_train"])
    fast.zero_grad()
    meta_test_loss(fast, criterion, episode).backward()
    first_order = grads_of(fast)
    gap = max((got[n] - first_order[n]).abs().max().item() for n in got)
    assert gap > 1e-4


@pytest.mark.parametrize("order", ["first", "second"])
def test_theta_restored_and_update_freq_sums_meta_gradients(corpus, order):
    task, model, criterion, optimizer, episodes = build(corpus, k=1, order=order)
    ep1, ep2 = next(episodes), next(episodes)
    theta = weights_of(model)

    g1 = meta_grad(task, model, criterion, optimizer, ep1)
    g2 = meta_grad(task, model, criterion, optimizer, ep2)
    for name, w in weights_of(model).items():
        assert torch.equal(w, theta[name]), f"θ not restored: {name}"

    # --update-freq 2: the trainer zeroes .grad once, then runs both episodes.
    model.zero_grad()
    task.train_step(ep1, model, criterion, optimizer, update_num=0)
    task.train_step(ep2, model, criterion, optimizer, update_num=0)
    accumulated = grads_of(model)
    for name in g1:
        assert torch.equal(accumulated[name], g1[name] + g2[name]), name


def test_theta_restored_when_an_inner_step_fails(corpus):
    task, model, criterion, optimizer, episodes = build(corpus, k=2)
    episode = next(episodes)
    theta = weights_of(model)
    calls = {"n": 0}
    forward = criterion.forward

    def failing_on_second_call(model_, sample, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise FloatingPointError("boom in inner step 2")
        return forward(model_, sample, *a, **kw)

    criterion.forward = failing_on_second_call
    with pytest.raises(FloatingPointError):
        task.train_step(episode, model, criterion, optimizer, update_num=0)
    for name, w in weights_of(model).items():
        assert torch.equal(w, theta[name]), f"θ_1 left in the weights: {name}"


def test_depth_zero_is_fairseq_train_step(corpus):
    """k = 0: the gradient is exactly FairseqTask.train_step's on the meta-test batch."""
    from fairseq.tasks import FairseqTask

    task, model, criterion, optimizer, episodes = build(corpus, k=0)
    episode = next(episodes)
    assert episode["meta_train"] == []
    got = meta_grad(task, model, criterion, optimizer, episode)
    model.zero_grad()
    FairseqTask.train_step(task, episode["meta_test"], model, criterion, optimizer, update_num=0)
    expected = grads_of(model)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_inner_steps_leave_grad_untouched(corpus, monkeypatch):
    """Right before the meta-test backward, .grad still holds only earlier micro-batches."""
    task, model, criterion, optimizer, episodes = build(corpus, k=2)
    episode = next(episodes)
    model.zero_grad()
    seen = []
    backward = optimizer.backward

    def spy(loss):
        seen.append([p.grad for p in model.parameters()])
        backward(loss)

    monkeypatch.setattr(optimizer, "backward", spy)
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert len(seen) == 1 and all(g is None for g in seen[0])


def test_inner_gradients_are_freed_before_the_next_step(corpus, monkeypatch):
    """Peak memory of first order is θ's saved copy on top of a plain step: each inner
    step's gradients are gone before the next forward (and before the meta-test step)."""
    import gc
    import weakref

    from fairseq_meta import meta_learning

    task, model, criterion, optimizer, episodes = build(corpus, k=2)
    episode = next(episodes)
    inner_grads, alive_at_forward = [], []
    grad = torch.autograd.grad
    forward = criterion.forward

    def recording_grad(*args, **kwargs):
        grads = grad(*args, **kwargs)
        inner_grads.extend(weakref.ref(g) for g in grads if g is not None)
        return grads

    def checking_forward(*args, **kwargs):
        gc.collect()
        alive_at_forward.append(sum(r() is not None for r in inner_grads))
        return forward(*args, **kwargs)

    monkeypatch.setattr(meta_learning.torch.autograd, "grad", recording_grad)
    criterion.forward = checking_forward
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert len(inner_grads) > 0
    # forwards: meta-train 1, meta-train 2, meta-test; none may see an earlier step's gradients
    assert alive_at_forward == [0, 0, 0]


@pytest.mark.parametrize("order", ["first", "second"])
def test_the_optimizer_owns_the_inner_step(corpus, order):
    """Every inner step goes through the meta optimizer's rule: half the
    learning rate on twice the direction is the same step, bit for bit (powers of
    two), and the optimizer counts the steps it applied."""
    task, model, criterion, optimizer, episodes = build(corpus, k=2, order=order)
    episode = next(episodes)
    expected = meta_grad(task, model, criterion, optimizer, episode)
    assert optimizer.num_inner_steps == 2

    optimizer.inner_lr = INNER_LR / 2
    optimizer.inner_direction = lambda params, grads: [
        None if g is None else 2 * g for g in grads
    ]
    got = meta_grad(task, model, criterion, optimizer, episode)
    assert optimizer.num_inner_steps == 4
    for name in expected:
        assert torch.equal(got[name], expected[name]), name

    optimizer.inner_lr = INNER_LR  # now twice the step: the rule is really used
    moved = meta_grad(task, model, criterion, optimizer, episode)
    assert any(not torch.equal(moved[n], expected[n]) for n in expected)
