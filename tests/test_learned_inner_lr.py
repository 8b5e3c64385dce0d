"""A learned inner step size (``--inner-lr-learned``): the gradient of log α
against independent computations, in float64, on a tiny RoBERTa.

F(s) = L(θ_k(α = exp(s)); B_q), θ_k computed by hand on a deep copy (backward()
and θ -= α ⊙ grad). Where the plugin's gradient is exact (second order; first
order with k = 1; Reptile's L(θ_1; B_2)) it must match central finite
differences of F along random directions; first order with k = 2 must match its
stated formula −α ⊙ ∇L(θ_2; B_q) ⊙ (d_1 + d_2), and differ from the exact one.
"""
import copy

import pytest
import torch
from conftest import assert_matches_finite_differences  # noqa: F401
from test_meta_gradients import INNER_LR, build


def learned_setup(corpus, k, order="first", granularity="tensor", objective="maml"):
    task, model, criterion, optimizer, episodes = build(
        corpus, k=k, order=order,
        extra=["--inner-lr-learned", granularity, "--meta-objective", objective])
    model.double()
    return task, model, criterion, optimizer, next(episodes)


def plugin_grad(task, model, criterion, optimizer, episode, s_values=None):
    """∂/∂s from one train step (s perturbed to *s_values* first, if given)."""
    learned = optimizer.learned_inner_lr
    params = [p for p in model.parameters() if p.requires_grad]
    learned.rates(params)  # creates s
    if s_values is not None:
        with torch.no_grad():
            for s, v in zip(learned.log_lrs, s_values):
                s.copy_(v)
    model.zero_grad()
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    return [g.double() for g in learned.accumulated_grad()]


def adapt_by_hand(model, criterion, batches, alphas):
    """θ_k on a deep copy: backward() of each normalised loss, θ -= α ⊙ grad;
    returns the copy and the inner gradients d_j (name -> tensor)."""
    fast = copy.deepcopy(model)
    params = [p for p in fast.parameters() if p.requires_grad]
    directions = []
    for batch in batches:
        fast.zero_grad()
        loss, sample_size, _ = criterion(fast, batch)
        (loss / sample_size).backward()
        directions.append([None if p.grad is None else p.grad.detach().clone() for p in params])
        with torch.no_grad():
            for p, a in zip(params, alphas):
                if p.grad is not None:
                    p -= a * p.grad
    return fast, directions


def normalized_loss(model, criterion, batch):
    loss, sample_size, _ = criterion(model, batch)
    return loss / sample_size


class _SOnly(torch.nn.Module):
    """The s vector as the only 'parameters' of a module, so that the shared
    finite-difference helper perturbs s (and nothing else)."""

    def __init__(self, s_values):
        super().__init__()
        self.s = torch.nn.ParameterList([torch.nn.Parameter(v.clone()) for v in s_values])


def assert_matches_fd_in_s(s_values, got, loss_of_s, rel=1e-7):
    holder = _SOnly(s_values)
    grads = {f"s.{i}": g for i, g in enumerate(got)}
    assert_matches_finite_differences(
        holder, grads, lambda shifted: loss_of_s([p.detach() for p in shifted.s]), rel=rel)


def _s_values(model, granularity, seed=0):
    """log α around log(INNER_LR), spread so that every α differs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in model.parameters():
        shape = p.shape if granularity == "coordinate" else (1,) * p.dim()
        out.append(torch.log(torch.full(shape, INNER_LR, dtype=torch.float64))
                   + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64) - 0.15)
    return out


@pytest.mark.parametrize("k,order,granularity", [
    (1, "first", "tensor"), (1, "first", "coordinate"), (1, "second", "tensor"),
    (2, "second", "tensor"), (2, "second", "coordinate"),
])
def test_exact_cases_match_finite_differences(corpus, float64_fairseq, k, order, granularity):
    task, model, criterion, optimizer, episode = learned_setup(corpus, k, order, granularity)
    s_values = _s_values(model, granularity)
    got = plugin_grad(task, model, criterion, optimizer, episode, s_values)

    def loss_of_s(s):
        fast, _ = adapt_by_hand(model, criterion, episode["meta_train"], [v.exp() for v in s])
        return normalized_loss(fast, criterion, episode["meta_test"]).item()

    assert_matches_fd_in_s(s_values, got, loss_of_s)


def test_first_order_k2_is_the_stated_formula_and_not_the_exact_gradient(corpus, float64_fairseq):
    task, model, criterion, optimizer, episode = learned_setup(corpus, 2, "first", "tensor")
    s_values = _s_values(model, "tensor")
    got = plugin_grad(task, model, criterion, optimizer, episode, s_values)

    alphas = [v.exp() for v in s_values]
    fast, directions = adapt_by_hand(model, criterion, episode["meta_train"], alphas)
    fast.zero_grad()
    normalized_loss(fast, criterion, episode["meta_test"]).backward()
    expected = []
    for i, (p, a) in enumerate(zip(fast.parameters(), alphas)):
        moved = sum(d[i] for d in directions if d[i] is not None)
        expected.append((-a * p.grad * moved).sum().reshape(a.shape) if p.grad is not None
                        else torch.zeros_like(a))
    for i, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-13, msg=f"s.{i}")

    second = learned_setup(corpus, 2, "second", "tensor")
    second[1].load_state_dict(model.state_dict())
    exact = plugin_grad(*second[:4], episode, s_values)
    gap = max((a - b).abs().max().item() for a, b in zip(got, exact))
    assert gap > 1e-6 * max(e.abs().max().item() for e in exact), gap


def test_reptile_learns_from_the_second_inner_loss(corpus, float64_fairseq):
    task, model, criterion, optimizer, episode = learned_setup(corpus, 2, "first", "tensor", "reptile")
    s_values = _s_values(model, "tensor")
    got = plugin_grad(task, model, criterion, optimizer, episode, s_values)
    first, second = episode["meta_train"]

    def loss_of_s(s):
        fast, _ = adapt_by_hand(model, criterion, [first], [v.exp() for v in s])
        return normalized_loss(fast, criterion, second).item()

    assert_matches_fd_in_s(s_values, got, loss_of_s)


def test_outer_step_moves_log_alpha_by_its_own_adam(corpus):
    task, model, criterion, optimizer, episodes = build(
        corpus, k=1, extra=["--inner-lr-learned", "tensor", "--inner-lr-lr", "0.01"])
    episode = next(episodes)
    learned = optimizer.learned_inner_lr
    model.zero_grad()
    task.train_step(episode, model, criterion, optimizer, update_num=0)
    grad = learned.accumulated_grad()
    before = [s.detach().clone() for s in learned.log_lrs]
    optimizer.step()
    # Adam's first step (bias-corrected m̂ = g, v̂ = g²): lr · g / (|g| + ε), ε = 1e-8.
    for b, s, g in zip(before, learned.log_lrs, grad):
        torch.testing.assert_close(s.detach(), b - 0.01 * g / (g.abs() + 1e-8), rtol=0, atol=1e-7)
    assert learned.accumulated_grad() is None  # the next update starts afresh
