"""The inner step and what it did, against independent computations on a tiny RoBERTa.

- ``--inner-preconditioner adam``: the first-order meta-gradient equals the gradient
  at θ_k of a copy stepped by hand with g / (√v̂ + ε), v̂ computed from a second
  moment planted in the outer Adam's state; second order equals central
  finite differences in float64; with no Adam state yet (first update) the step
  is plain SGD, bit for bit; an fp16 master copy, flat or not, maps to θ's
  parameters.
- the adaptation gain L(θ; B_q) − L(θ_k; B_q) per objective and the inner move
  ‖θ_k − θ‖/‖θ‖ equal a by-hand computation; they are measured on the last update
  of every --log-adaptation-interval only, without changing training (dropout
  masks, random stream); a log row without a measurement holds none.
- validation after adaptation: the loss on a valid batch after the inner steps
  on the batch before it, θ restored bit for bit, no inner step counted.
"""
import copy
import logging
import math

import pytest
import torch
from conftest import META, assert_matches_finite_differences, train
from fairseq.logging import metrics
from test_meta_gradients import adapted_copy, build, grads_of, meta_grad, weights_of

from fairseq_meta.optim.meta_optimizer import _outer_state_keys

ALPHA = 1e-3  # Adam units: each weight moves by about α per inner step
EPS = 1e-8
# fairseq's default --adam-betas (0.9, 0.999): Adam's largest step is
# max(1, (1 − β1) / √(1 − β2)) × lr (Kingma & Ba, 2015, sec. 2.1)
BOUND = max(1.0, (1 - 0.9) / math.sqrt(1 - 0.999))


def build_adam(corpus, k=2, order="first", extra=()):
    return build(corpus, k, order, extra=["--inner-preconditioner", "adam", "--inner-lr", str(ALPHA),
                                          "--lr", "1e-3", *extra])


def outer_step(model, criterion, optimizer, batch):
    """One real outer Adam step on *batch*."""
    optimizer.zero_grad()
    loss, sample_size, _ = criterion(model, batch)
    (loss / sample_size).backward()
    optimizer.step()
    optimizer.zero_grad()


def plant_second_moments(model, optimizer, batch, criterion, step=10, beta2=0.999, scale="rms"):
    """Give the outer Adam a known state: v such that √v̂ is, per tensor, the RMS
    (*scale* "rms") or the largest magnitude ("max") of a real gradient times a
    factor in [1, 2) per element (a v̂ from a single gradient makes g / √v̂ explode
    where that gradient happened to be tiny). With "rms", sparse gradients (the
    embedding's rows) exceed Adam's step bound and are clipped; with "max" no
    coordinate comes near it, which a finite-difference check needs (the clip
    has a kink). Returns the denominators √v̂ + ε, computed here from the planted
    numbers."""
    model.zero_grad()
    loss, sample_size, _ = criterion(model, batch)
    (loss / sample_size).backward()
    generator = torch.Generator().manual_seed(0)
    denominators = {}
    for n, p in model.named_parameters():
        g = p.grad.double()
        rms = (g.pow(2).mean().sqrt() if scale == "rms" else g.abs().max()).clamp(min=1e-6)
        v_hat = (rms * (1 + torch.rand(p.shape, generator=generator, dtype=torch.float64))) ** 2
        v = (v_hat * (1 - beta2 ** step)).to(p.dtype)
        optimizer.optimizer.state[p] = {"step": step, "exp_avg": torch.zeros_like(p), "exp_avg_sq": v}
        denominators[n] = (v.double() / (1 - beta2 ** step)).sqrt() + EPS
    model.zero_grad()
    return denominators


def adapted_by_hand(model, criterion, meta_train, denominators, lr=ALPHA):
    """θ_k by the book: a copy, k times backward() and θ -= α g / denominator."""
    fast = copy.deepcopy(model)
    names = dict(fast.named_parameters())
    for batch in meta_train:
        fast.zero_grad()
        loss, sample_size, _ = criterion(fast, batch)
        (loss / sample_size).backward()
        with torch.no_grad():
            for n, p in names.items():
                if p.grad is not None:
                    p -= lr * (p.grad / denominators[n]).clamp(-BOUND, BOUND)
    return fast


def test_adam_preconditioned_first_order_equals_the_step_by_hand(corpus):
    task, model, criterion, optimizer, episodes = build_adam(corpus, k=2)
    denominators = plant_second_moments(model, optimizer, next(episodes)["meta_test"], criterion)
    episode = next(episodes)

    fast = adapted_by_hand(model, criterion, episode["meta_train"], denominators)
    fast.zero_grad()
    criterion(fast, episode["meta_test"])[0].backward()
    expected = grads_of(fast)

    theta = weights_of(model)
    got = meta_grad(task, model, criterion, optimizer, episode)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert all(torch.equal(w, theta[n]) for n, w in weights_of(model).items())
    # The outer state is read, never written, by the inner steps.
    assert all(s["step"] == 10 for s in optimizer.optimizer.state.values())

    # It is not the plain-SGD step: the same α without the preconditioner differs.
    plain = adapted_by_hand(model, criterion, episode["meta_train"], {n: 1.0 for n in denominators})
    plain.zero_grad()
    criterion(plain, episode["meta_test"])[0].backward()
    assert any(not torch.allclose(got[n], g, rtol=1e-3) for n, g in grads_of(plain).items())


def test_adam_preconditioned_second_order_matches_finite_differences(corpus, float64_fairseq):
    task, model, criterion, optimizer, episodes = build_adam(corpus, k=2, order="second")
    model.double()
    denominators = plant_second_moments(model, optimizer, next(episodes)["meta_test"], criterion,
                                        scale="max")
    episode = next(episodes)
    got = meta_grad(task, model, criterion, optimizer, episode)

    assert_matches_finite_differences(
        model, got,
        lambda shifted: criterion(adapted_by_hand(shifted, criterion, episode["meta_train"],
                                                  denominators), episode["meta_test"])[0].item(),
        rel=1e-7)


@pytest.mark.parametrize("order", ["first", "second"])
def test_without_adam_state_the_step_is_plain_sgd(corpus, order, caplog):
    """The first update of a run: no second moment yet, so the preconditioned rule
    is the plain-SGD one, bit for bit, and says so once."""
    task, model, criterion, optimizer, episodes = build_adam(corpus, k=2, order=order)
    episode = next(episodes)
    with caplog.at_level(logging.WARNING, logger="fairseq_meta.optim.meta_optimizer"):
        got = meta_grad(task, model, criterion, optimizer, episode)
        meta_grad(task, model, criterion, optimizer, episode)
    assert caplog.text.count("no second moment yet") == 1
    optimizer.inner_preconditioner = "none"
    expected = meta_grad(task, model, criterion, optimizer, episode)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_a_coordinate_with_stale_second_moment_moves_by_adams_bound(corpus):
    """v̂ = 0 where the outer Adam has seen only zero gradients (an embedding row
    of a token absent from every batch so far): the inner step moves that
    coordinate by α × Adam's step bound, not by α g / ε (which threw θ to a loss
    of 420 bits in one update before the bound)."""
    task, model, criterion, optimizer, episodes = build_adam(corpus, k=1)
    denominators = plant_second_moments(model, optimizer, next(episodes)["meta_test"], criterion)
    episode = next(episodes)
    embed = model.encoder.sentence_encoder.embed_tokens.weight
    name = next(n for n, p in model.named_parameters() if p is embed)
    optimizer.optimizer.state[embed]["exp_avg_sq"].zero_()
    denominators[name] = torch.full_like(embed, EPS, dtype=torch.float64)

    model.zero_grad()
    loss, sample_size, _ = criterion(model, episode["meta_train"][0])
    (loss / sample_size).backward()
    grad = embed.grad.clone()
    seen = grad != 0
    assert seen.any()
    fast = adapted_by_hand(model, criterion, episode["meta_train"], denominators)
    moved = dict(fast.named_parameters())[name].detach() - embed.detach()
    assert torch.equal(moved[~seen], torch.zeros_like(moved[~seen]))
    at_bound = torch.isclose(moved[seen].abs(), torch.tensor(ALPHA * BOUND), rtol=1e-3)
    assert at_bound.float().mean() > 0.5  # almost every touched coordinate
    torch.testing.assert_close(moved[seen], -ALPHA * (grad[seen] / EPS).clamp(-BOUND, BOUND),
                               rtol=1e-5, atol=1e-9)

    # and the meta-gradient is the gradient at that bounded θ_1
    fast.zero_grad()
    criterion(fast, episode["meta_test"])[0].backward()
    expected = grads_of(fast)
    got = meta_grad(task, model, criterion, optimizer, episode)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-6, msg=n)
    assert all(math.isfinite(float(g.abs().max())) for g in got.values())


def test_depth_zero_ignores_the_preconditioner(corpus):
    from fairseq.tasks import FairseqTask

    task, model, criterion, optimizer, episodes = build_adam(corpus, k=0)
    episode = next(episodes)
    got = meta_grad(task, model, criterion, optimizer, episode)
    model.zero_grad()
    FairseqTask.train_step(task, episode["meta_test"], model, criterion, optimizer, update_num=0)
    for name, g in grads_of(model).items():
        assert torch.equal(got[name], g), name


def test_flat_fp32_master_copy_maps_to_each_parameter():
    """FP16Optimizer's flat master (one tensor per device, parameters in order):
    each parameter's Adam state is its slice. Built by hand: the flat master needs
    CUDA in fairseq's own builder."""
    params = [torch.nn.Parameter(torch.randn(3, 2).half()), torch.nn.Parameter(torch.randn(4).half()),
              torch.nn.Parameter(torch.randn(2, 2).half())]

    class Wrapper:
        fp16_params = params
        fp32_params = {0: torch.nn.Parameter(torch.cat([p.detach().float().view(-1) for p in params]))}

    keys = _outer_state_keys(Wrapper, params)
    flat = Wrapper.fp32_params[0]
    assert [keys[id(p)] for p in params] == [(flat, (0, 6)), (flat, (6, 4)), (flat, (10, 4))]
    assert _outer_state_keys(object(), params) == {}


def test_inner_preconditioner_is_refused_without_adam(corpus):
    from fairseq_meta.errors import MetaConfigError

    with pytest.raises(MetaConfigError, match="--fp16-adam-stats"):
        build_adam(corpus, extra=["--fp16-adam-stats"])


# --- what the inner steps did --------------------------------------------------


def reduced(task, criterion, logs):
    with metrics.aggregate() as agg:
        task.reduce_metrics(logs, criterion)
        return agg.get_smoothed_values()


@pytest.mark.parametrize("nsp", [False, True], ids=["mlm", "mlm+nsp"])
@pytest.mark.parametrize("order", ["first", "second"])
def test_adaptation_gain_and_inner_move_equal_a_computation_by_hand(corpus, nsp, order,
                                                                   float64_fairseq):
    # float64, so that only the log's rounding to 4 decimals is left between the two
    extra = ["--log-adaptation-interval", "1"] + (["--sentence-objective", "nsp"] if nsp else [])
    task, model, criterion, optimizer, episodes = build(corpus, k=2, order=order, extra=extra)
    model.double()
    episode = next(episodes)
    # plain SGD at the task's α (adapted_by_hand clips each coordinate at the
    # preconditioned step's bound, which plain SGD does not have: with NSP on, one
    # initialisation had gradients past it, and the gains differed by 3e-4 bits)
    fast = adapted_copy(model, criterion, episode["meta_train"])
    with torch.no_grad():
        _, size, before = criterion(model, episode["meta_test"])
        _, _, after = criterion(fast, episode["meta_test"])
        move = math.sqrt(sum(((a - t) ** 2).sum() for a, t in zip(fast.parameters(), model.parameters())))
        norm = math.sqrt(sum((t ** 2).sum() for t in model.parameters()))

    model.zero_grad()
    _, _, log = task.train_step(episode, model, criterion, optimizer, update_num=0)
    stats = reduced(task, criterion, [log])

    def bits(key, n):
        return float(before[key] - after[key]) / float(n) / math.log(2)

    # logged rounded to 4 decimals
    assert stats["adaptation_gain"] == pytest.approx(bits("loss", size), abs=6e-5)
    assert stats["adaptation_gain_mlm"] == pytest.approx(bits("mlm_loss", size), abs=6e-5)
    if nsp:
        assert stats["adaptation_gain_nsp"] == pytest.approx(bits("nsp_loss", after["nsp_count"]), abs=6e-5)
    else:
        assert "adaptation_gain_nsp" not in stats
    assert stats["inner_move"] == pytest.approx(move / norm, rel=1e-4)


def test_measured_on_the_last_update_of_each_interval_without_changing_training(corpus):
    """--log-adaptation-interval 3: updates 3 and 6 (update_num 2 and 5) measure.
    With dropout on, measuring leaves the meta-gradient and torch's random stream
    exactly as they are without it."""
    dropout = ["--dropout", "0.1", "--attention-dropout", "0.1"]
    task, model, criterion, optimizer, episodes = build(
        corpus, k=1, extra=["--log-adaptation-interval", "3", *dropout])
    episode = next(episodes)
    measured = []
    for update_num in range(6):
        _, _, log = task.train_step(episode, model, criterion, optimizer, update_num=update_num)
        measured.append("adapt_before_loss" in log)
    assert measured == [False, False, True, False, False, True]

    results = {}
    for interval in (1, 0):
        task.cfg.log_adaptation_interval = interval
        torch.manual_seed(5)
        model.zero_grad()
        _, _, log = task.train_step(episode, model, criterion, optimizer, update_num=0)
        results[interval] = (grads_of(model), torch.get_rng_state(), log)
    (g1, rng1, log1), (g0, rng0, log0) = results[1], results[0]
    assert torch.equal(rng1, rng0)
    for name in g0:
        assert torch.equal(g1[name], g0[name]), name
    assert log1["adapt_after_loss"] == log0["loss"]


def test_a_log_row_without_a_measurement_shows_none(corpus):
    task, model, criterion, optimizer, episodes = build(
        corpus, k=1, extra=["--log-adaptation-interval", "2"])
    episode = next(episodes)
    logs = [task.train_step(episode, model, criterion, optimizer, update_num=u)[2] for u in range(3)]
    with metrics.aggregate("rows") as agg:
        for log in logs[:2]:  # updates 1, 2: one measured
            task.reduce_metrics([log], criterion)
        first = agg.get_smoothed_values()
        agg.reset()  # fairseq's reset_meters after a log row
        task.reduce_metrics([logs[2]], criterion)  # update 3: none measured
        second = agg.get_smoothed_values()
    assert "adaptation_gain" in first and "inner_move" in first
    assert not {"adaptation_gain", "adaptation_gain_mlm", "inner_move", "outer_move"} & second.keys()
    assert second["episode_tokens"] > 0


def test_outer_move_is_the_outer_step_relative_to_theta(corpus):
    task, model, criterion, optimizer, episodes = build(
        corpus, k=1, extra=["--log-adaptation-interval", "1"])
    model.zero_grad()
    _, _, log = task.train_step(next(episodes), model, criterion, optimizer, update_num=0)
    theta = weights_of(model)
    task.optimizer_step(optimizer, model, update_num=0)
    step = math.sqrt(sum(((p - theta[n]) ** 2).sum() for n, p in model.named_parameters()))
    norm = math.sqrt(sum((t ** 2).sum() for t in theta.values()))
    assert step > 0
    stats = reduced(task, criterion, [log])
    assert stats["outer_move"] == pytest.approx(step / norm, rel=1e-4)


# --- validation after adaptation ---------------------------------------------


@pytest.mark.parametrize("precondition", [False, True], ids=["sgd", "adam"])
def test_validation_after_adaptation(corpus, precondition):
    extra = ["--valid-adapt-steps", "1", "--lr", "1e-3"]
    if precondition:
        extra += ["--inner-preconditioner", "adam", "--inner-lr", str(ALPHA)]
    task, model, criterion, optimizer, episodes = build(corpus, k=1, extra=extra)
    outer_step(model, criterion, optimizer, next(episodes)["meta_test"])
    denominators = plant_second_moments(model, optimizer, next(episodes)["meta_test"], criterion)
    task.train_step(next(episodes), model, criterion, optimizer, update_num=1)  # hands the optimizer
    task.load_dataset("valid", combine=False, epoch=1)
    batches = list(task.get_batch_iterator(task.dataset("valid"), max_sentences=3).next_epoch_itr(
        shuffle=False))[:3]
    assert len(batches) == 3
    if not precondition:
        denominators = {n: 1.0 for n in denominators}
    lr = ALPHA if precondition else 0.5
    theta, steps = weights_of(model), optimizer.num_inner_steps
    model.zero_grad()

    logs = []
    with torch.no_grad():
        model.eval()
        for batch in batches:
            logs.append(task.valid_step(batch, model, criterion)[2])
    assert "adapted_loss" not in logs[0]  # the first batch only serves as support
    for support, batch, log in zip(batches, batches[1:], logs[1:]):
        model.eval()
        fast = adapted_by_hand(model, criterion, [support], denominators, lr=lr)
        with torch.no_grad():
            expected = criterion(fast, batch)[0]
        torch.testing.assert_close(log["adapted_loss"], expected.detach(), rtol=1e-4, atol=1e-5)
        assert log["adapt_before_loss"] == log["loss"]  # valid_loss: still the loss at θ

    assert all(torch.equal(w, theta[n]) for n, w in weights_of(model).items())
    assert optimizer.num_inner_steps == steps
    assert all(p.grad is None for p in model.parameters())
    stats = reduced(task, criterion, logs)
    size = sum(float(log["adapted_sample_size"]) for log in logs[1:])
    assert stats["adapted_loss"] == pytest.approx(
        sum(float(log["adapted_loss"]) for log in logs[1:]) / size / math.log(2), abs=1e-3)


def test_training_log_shows_the_adaptation_metrics_end_to_end(corpus, tmp_path):
    proc = train(corpus, tmp_path / "run", *META, "--meta-train-steps", "1", "--inner-lr", "1e-3",
                 "--inner-preconditioner", "adam", "--log-adaptation-interval", "2",
                 "--valid-adapt-steps", "1", "--max-update", "4", "--log-interval", "2",
                 "--tensorboard-logdir", tmp_path / "tb")
    out = proc.stdout + proc.stderr
    rows = [line for line in out.splitlines() if "| train_inner |" in line]
    print(rows, [line for line in out.splitlines() if "valid on" in line])
    assert len(rows) == 2 and all(
        key in row for row in rows for key in ("adaptation_gain=", "adaptation_gain_mlm=",
                                                "inner_move=", "outer_move="))
    valid = [line for line in out.splitlines() if "| valid |" in line]
    assert valid and "adapted_loss " in valid[-1] and "| loss " in valid[-1]
