"""Reptile (``--meta-objective reptile``) against independent computations.

- k = 1 with plain SGD is ordinary training: the gradient handed to Adam equals
  k = 0's to float rounding (float32 rel 1e-5, float64 rel 1e-12), and a 50-update
  run logs the same losses as k = 0 within 1e-3 bits;
- k = 2: (θ − θ_2) / (2α) of a deep copy stepped by hand with backward() and SGD;
- θ restored bit for bit, ``--update-freq 2`` averages two episodes' pseudo-gradients.
"""
import re

import pytest
import torch
from conftest import META, train
from test_meta_gradients import INNER_LR, adapted_copy, build, weights_of

REPTILE = ["--meta-objective", "reptile"]


def handed_to_adam(task, model, criterion, optimizer, episode):
    """What fairseq's trainer gives the outer optimizer for one episode:
    ``.grad`` divided by the returned sample size."""
    model.zero_grad()
    _, sample_size, _ = task.train_step(episode, model, criterion, optimizer, update_num=0)
    assert sample_size > 0
    return {n: p.grad / sample_size for n, p in model.named_parameters() if p.grad is not None}


def _pair(corpus, float64):
    reptile = build(corpus, k=1, extra=REPTILE)
    plain = build(corpus, k=0)
    plain[1].load_state_dict(reptile[1].state_dict())
    if float64:
        reptile[1].double()
        plain[1].double()
    return reptile, plain


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reptile_k1_sgd_hands_adam_the_ordinary_gradient(corpus, dtype, request):
    float64 = dtype == "float64"
    if float64:
        request.getfixturevalue("float64_fairseq")
    (task, model, criterion, optimizer, episodes), (task0, model0, criterion0, optimizer0, episodes0) = \
        _pair(corpus, float64)
    episode, episode0 = next(episodes), next(episodes0)
    # k = 1 reads the same data stream as k = 0: no mini-batch is held back.
    assert episode["meta_test"] is None and len(episode["meta_train"]) == 1
    assert torch.equal(episode["meta_train"][0]["net_input"]["src_tokens"],
                       episode0["meta_test"]["net_input"]["src_tokens"])

    got = handed_to_adam(task, model, criterion, optimizer, episode)
    expected = handed_to_adam(task0, model0, criterion0, optimizer0, episode0)
    assert got.keys() == expected.keys()
    # Relative to the gradient's scale: k_proj.bias's true gradient is 0 (softmax
    # is shift-invariant), so per tensor both hold only rounding noise.
    scale = max(g.abs().max().item() for g in expected.values())
    worst = max((got[n] - expected[n]).abs().max().item() for n in expected)
    assert worst <= (1e-12 if float64 else 1e-5) * scale, (worst, scale)


def test_reptile_k2_is_the_mean_inner_direction_of_a_copy_stepped_by_hand(corpus, float64_fairseq):
    task, model, criterion, optimizer, episodes = build(corpus, k=2, extra=REPTILE)
    model.double()
    episode = next(episodes)
    assert episode["meta_test"] is None and len(episode["meta_train"]) == 2
    theta = weights_of(model)

    got = handed_to_adam(task, model, criterion, optimizer, episode)
    for name, w in weights_of(model).items():
        assert torch.equal(w, theta[name]), f"θ not restored: {name}"

    fast = adapted_copy(model, criterion, episode["meta_train"])
    expected = {n: (theta[n] - p.detach()) / (2 * INNER_LR) for n, p in fast.named_parameters()}
    for name, g in expected.items():
        if name in got:
            torch.testing.assert_close(got[name], g, rtol=1e-9, atol=1e-12, msg=name)
        else:  # a weight no inner batch reaches does not move
            assert torch.equal(g, torch.zeros_like(g)), name
    # The check discriminates: the mean direction is not B_1's gradient at θ alone.
    one_step = adapted_copy(model, criterion, episode["meta_train"][:1])
    first = {n: (theta[n] - p.detach()) / INNER_LR for n, p in one_step.named_parameters()}
    assert max((got[n] - first[n]).abs().max().item() for n in got) > 1e-4


def test_update_freq_averages_the_episodes_pseudo_gradients(corpus):
    task, model, criterion, optimizer, episodes = build(corpus, k=2, extra=REPTILE)
    ep1, ep2 = next(episodes), next(episodes)
    g1 = handed_to_adam(task, model, criterion, optimizer, ep1)
    g2 = handed_to_adam(task, model, criterion, optimizer, ep2)

    model.zero_grad()
    _, s1, _ = task.train_step(ep1, model, criterion, optimizer, update_num=0)
    _, s2, _ = task.train_step(ep2, model, criterion, optimizer, update_num=0)
    for name, p in model.named_parameters():
        if name in g1:
            torch.testing.assert_close(p.grad / (s1 + s2), (g1[name] + g2[name]) / 2, msg=name)


def _losses(stdout):
    """The training loss of every log row."""
    return [float(m) for m in re.findall(r"\| train_inner \|.*?\bloss (\d+\.\d+)", stdout)] or \
        [float(m) for m in re.findall(r"train_inner.*?loss=(\d+\.\d+)", stdout)]


def test_reptile_k1_run_logs_the_losses_of_k0(corpus, tmp_path):
    common = [*META, "--inner-lr", "0.05", "--max-update", "50", "--seed", "3",
              "--disable-validation", "--no-save"]
    k0 = train(corpus, tmp_path / "k0", *common, "--meta-train-steps", "0")
    k1 = train(corpus, tmp_path / "reptile", *common, "--meta-train-steps", "1", *REPTILE,
               "--log-adaptation-interval", "0")
    a, b = _losses(k0.stdout + k0.stderr), _losses(k1.stdout + k1.stderr)
    assert len(a) == len(b) >= 40, (len(a), len(b))
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-3, list(zip(a, b))


def test_reptile_and_a_learned_alpha_log_what_they_did(corpus, tmp_path):
    proc = train(corpus, tmp_path / "run", *META, "--meta-train-steps", "2", *REPTILE,
                 "--inner-lr", "0.05", "--inner-lr-learned", "tensor", "--inner-lr-lr", "0.01",
                 "--log-adaptation-interval", "1", "--max-update", "3", "--seed", "3",
                 "--disable-validation", "--no-save")
    rows = [line for line in (proc.stdout + proc.stderr).splitlines() if "train_inner" in line]
    assert len(rows) == 3, rows
    values = [dict(re.findall(r"(\w+)=([-\d.e]+)", row)) for row in rows]
    for v in values:
        for key in ("adaptation_gain", "inner_move", "outer_move", "inner_lr_mean", "inner_lr_min",
                    "inner_lr_max"):
            assert key in v, (key, v)
        assert float(v["inner_lr_min"]) <= float(v["inner_lr_mean"]) <= float(v["inner_lr_max"])
        assert float(v["inner_move"]) > 0
    # α starts at --inner-lr and moves (log α by at most about --inner-lr-lr per update)
    first = values[0]
    assert float(first["inner_lr_min"]) < float(first["inner_lr_max"])
    assert 0.05 * 0.98 < float(first["inner_lr_min"]) and float(first["inner_lr_max"]) < 0.05 * 1.02
