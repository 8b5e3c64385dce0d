"""The README's "done when": fairseq-train with the plugin trains, validates,
saves and resumes on CPU, for each training mode."""
import math
import re

import pytest

from conftest import META, run_cli, train
from fairseq_meta.checkpoints import load_checkpoint

BASE = [*META, "--meta-train-steps", "2", "--inner-lr", "1e-3", "--seed", "5"]

# id: (data fixture, extra flags)
VARIANTS = {
    "first-order": ("corpus", ["--meta-order", "first"]),
    "second-order": ("corpus", ["--meta-order", "second"]),
    "nsp": ("corpus", ["--sentence-objective", "nsp"]),
    "two-corpora": ("two_corpora", ["--corpora", "wiki,books", "--corpus-sampling-alpha", "0.5"]),
}


def _train_inner(log):
    """{key: value} of every train_inner line, in order."""
    return [
        dict(re.findall(r"(\w+)=([^,\s]+)", line.split("|")[-1]))
        for line in log.splitlines()
        if "| train_inner |" in line
    ]


def _valid_line(log):
    lines = [line for line in log.splitlines() if "valid on 'valid' subset" in line]
    assert lines, "no validation"
    return lines[-1]


def _assert_trained(log, updates, keys):
    rows = _train_inner(log)
    assert [int(r["num_updates"]) for r in rows] == list(updates), [r.get("num_updates") for r in rows]
    for row in rows:
        for key in ("loss", "meta_train_loss", "meta_test_loss", *keys):
            assert key in row, f"{key} missing from train_inner: {sorted(row)}"
            assert math.isfinite(float(row[key])), (key, row[key])
    valid = _valid_line(log)
    loss = float(re.search(r"\| loss ([0-9.]+) \|", valid).group(1))
    assert math.isfinite(loss)
    return rows, valid


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trains_validates_saves_and_resumes(variant, request, tmp_path):
    data_key, flags = VARIANTS[variant]
    data = request.getfixturevalue(data_key)
    save = tmp_path / "ckpt"
    tensorboard = tmp_path / "tb"
    extra = ["--tensorboard-logdir", tensorboard] if variant == "first-order" else []
    nsp_keys = ("nsp_loss", "nsp_accuracy") if variant == "nsp" else ()

    first = train(data, save, *BASE, *flags, *extra, "--max-update", "3").stdout
    assert "No existing checkpoint found" in first
    _, valid = _assert_trained(first, range(1, 4), nsp_keys)
    assert "Stopping training due to num_updates: 3 >= max_update: 3" in first
    assert (save / "checkpoint_last.pt").is_file() and (save / "checkpoint_best.pt").is_file()
    for key in nsp_keys:
        assert f"| {key} " in valid, valid

    second = train(data, save, *BASE, *flags, *extra, "--max-update", "5").stdout
    assert f"Loaded checkpoint {save}/checkpoint_last.pt (epoch 1 @ 3 updates)" in second
    _assert_trained(second, range(4, 6), nsp_keys)

    state = load_checkpoint(save / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 5
    meta = state["last_optimizer_state"]["fairseq_meta"]
    assert meta == {
        "num_inner_steps": 10,
        "inner_lr": 1e-3,
        "meta_order": "second" if variant == "second-order" else "first",
        "inner_preconditioner": "none",
    }
    heads = {k.split(".")[1] for k in state["model"] if k.startswith("classification_heads.")}
    assert heads == ({"next_sentence_head"} if variant == "nsp" else set())

    if variant == "two-corpora":
        _assert_sampling_probabilities(first, alpha=0.5)
        _assert_sampling_probabilities(second, alpha=0.5)
    if variant == "first-order":
        _assert_tensorboard_scalars(tensorboard)


def _assert_sampling_probabilities(log, alpha):
    blocks = {
        m.group(2): int(m.group(1))
        for m in re.finditer(r"loaded (\d+) blocks from: \S+/(wiki|books)/train\b", log)
    }
    assert blocks.keys() == {"wiki", "books"}, blocks
    match = re.search(r"corpus sampling probabilities: \{'wiki': ([0-9.]+), 'books': ([0-9.]+)\}", log)
    assert match, "no corpus sampling probabilities in the log"
    weights = {name: n**alpha for name, n in blocks.items()}
    total = sum(weights.values())
    assert float(match.group(1)) == pytest.approx(weights["wiki"] / total, abs=1e-4)
    assert float(match.group(2)) == pytest.approx(weights["books"] / total, abs=1e-4)
    # alpha < 1 flattens the distribution towards uniform.
    assert float(match.group(2)) > blocks["books"] / sum(blocks.values())


def _assert_tensorboard_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    inner = EventAccumulator(str(logdir / "train_inner"))
    inner.Reload()
    scalars = set(inner.Tags()["scalars"])
    assert {"meta_train_loss", "meta_test_loss", "loss"} <= scalars, scalars
    for tag in ("meta_train_loss", "meta_test_loss"):
        events = inner.Scalars(tag)
        # Both runs (updates 1-3, then 4-5 after resuming) log into the same directory.
        assert sorted(e.step for e in events) == [1, 2, 3, 4, 5], (tag, [e.step for e in events])
        assert all(math.isfinite(e.value) and e.value > 0 for e in events)
    epoch = EventAccumulator(str(logdir / "train"))
    epoch.Reload()
    assert {"meta_train_loss", "meta_test_loss"} <= set(epoch.Tags()["scalars"])
    valid = EventAccumulator(str(logdir / "valid"))
    valid.Reload()
    assert "loss" in valid.Tags()["scalars"]


@pytest.mark.parametrize("k", [0, 2])
def test_episode_tokens_are_exact_counts(k, corpus, tmp_path):
    """Each log row sums the tokens its updates processed, meta-train and meta-test: with
    full blocks (--sample-break-mode none) that is (k + 1) x batch x block size per
    update, an integer whatever the machine's speed."""
    log = train(corpus, tmp_path, *META, "--meta-train-steps", k, "--inner-lr", "1e-3",
                "--sample-break-mode", "none", "--max-update", "4", "--log-interval", "2").stdout
    rows = _train_inner(log)
    assert [int(r["num_updates"]) for r in rows] == [2, 4]
    batch, block = 4, 32  # conftest.TRAIN_DEFAULTS
    assert [r["episode_tokens"] for r in rows] == [str(2 * (k + 1) * batch * block)] * 2


def test_fairseq_validate_scores_a_meta_checkpoint_as_training_did(corpus, tmp_path):
    """fairseq-validate builds no optimizer: the task's reference to the optimizer's name
    must resolve to nothing, not stop the tool; its loss is the one training logged."""
    log = train(corpus, tmp_path, *BASE, "--max-update", "2").stdout
    trained = float(re.search(r"\| loss ([0-9.]+) \|", _valid_line(log)).group(1))
    proc = run_cli("validate", [corpus, "--user-dir", META[1], "--task", "meta_masked_lm",
                                "--path", tmp_path / "checkpoint_last.pt", "--cpu",
                                "--batch-size", "4", "--num-workers", "0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    validated = float(re.search(r"\| loss ([0-9.]+) \|", _valid_line(proc.stdout + proc.stderr)).group(1))
    assert validated == trained
