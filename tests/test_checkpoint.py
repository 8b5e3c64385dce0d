"""Checkpoints: bit-identical resume, the meta optimizer's own state, fine-tuning
the pre-trained weights with stock fairseq RoBERTa, and how fairseq loads them
with the plugin (weights-only; the refusals: tests/test_checkpoint_safety.py)."""
import csv
import math
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import (  # noqa: E402
    HANG_GUARD_S,
    META, REPO, SHARED_DATA, TINY_ROBERTA, USER_DIR, assert_same_weights, model_weights,
    run_cli, train,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# dropout stays at its default 0.1: fairseq reseeds torch with seed + num_updates
# before every update, so resuming must reproduce the dropout masks too.
COMMON = ["--seed", "3"]


def _load(path):
    from fairseq_meta.checkpoints import load_checkpoint

    return load_checkpoint(path)


def _assert_same_optimizer_state(a, b):
    """Every tensor (Adam moments, step counts) and the param groups, bit for bit."""
    assert a.keys() == b.keys()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for pid in a["state"]:
        sa, sb = a["state"][pid], b["state"][pid]
        assert sa.keys() == sb.keys(), pid
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert torch.equal(sa[key], sb[key]), f"optimizer state {pid}.{key} differs"
            else:
                assert sa[key] == sb[key], f"optimizer state {pid}.{key} differs"


def _meta_args(k, order, *extra):
    return [*META, "--meta-train-steps", str(k), "--inner-lr", "0.05", "--meta-order", order,
            *COMMON, *extra]


# id: (k, --meta-order, extra flags). The second also resumes NSP pair sampling.
RUNS = {
    "k1-first": (1, "first", []),
    "k2-second-nsp": (2, "second", ["--sentence-objective", "nsp"]),
    # the inner step reads the outer Adam's state: resuming must restore it exactly
    "k2-first-adam-preconditioned": (2, "first", ["--inner-preconditioner", "adam",
                                                  "--log-adaptation-interval", "2"]),
    # Reptile with a learned α per weight: log α and its Adam must resume exactly
    "k2-reptile-learned-coordinate": (2, "first", ["--meta-objective", "reptile",
                                                   "--inner-lr-learned", "coordinate",
                                                   "--log-adaptation-interval", "2"]),
    "k1-first-learned-tensor": (1, "first", ["--inner-lr-learned", "tensor"]),
}


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """run id -> checkpoint_last.pt of 6 updates in one go (made on first use).
    They double as the pre-trained models that are fine-tuned below."""
    made = {}

    def get(run):
        if run not in made:
            k, order, extra = RUNS[run]
            save = tmp_path_factory.mktemp(run)
            train(corpus, save, *_meta_args(k, order, *extra), "--max-update", "6")
            made[run] = save / "checkpoint_last.pt"
        return made[run]

    return get


@pytest.fixture(scope="module")
def uninterrupted_k1(uninterrupted):
    return uninterrupted("k1-first")


@pytest.mark.parametrize("run", list(RUNS))
def test_resume_is_bit_identical(corpus, tmp_path, uninterrupted, run):
    k, order, extra = RUNS[run]
    a_last = uninterrupted(run)

    train(corpus, tmp_path / "b", *_meta_args(k, order, *extra), "--max-update", "3")
    half = _load(tmp_path / "b" / "checkpoint_last.pt")
    assert half["optimizer_history"][-1]["num_updates"] == 3
    assert half["last_optimizer_state"]["fairseq_meta"]["num_inner_steps"] == 3 * k
    proc = train(corpus, tmp_path / "b", *_meta_args(k, order, *extra), "--max-update", "6")
    assert f"Loaded checkpoint {tmp_path / 'b' / 'checkpoint_last.pt'} (epoch 1 @ 3 updates)" in proc.stdout

    a, b = _load(a_last), _load(tmp_path / "b" / "checkpoint_last.pt")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 6
    assert_same_weights(a["model"], b["model"])
    _assert_same_optimizer_state(a["last_optimizer_state"], b["last_optimizer_state"])
    assert a["extra_state"]["train_iterator"] == b["extra_state"]["train_iterator"]
    # The meta optimizer's own counters: 6 episodes of k inner steps, counted
    # across the restart (3k before it, restored from the checkpoint, + 3k after).
    expected = {"num_inner_steps": 6 * k, "inner_lr": 0.05, "meta_order": order,
                "inner_preconditioner": "adam" if "--inner-preconditioner" in extra else "none"}
    meta_a, meta_b = dict(a["last_optimizer_state"]["fairseq_meta"]), dict(b["last_optimizer_state"]["fairseq_meta"])
    learned_a, learned_b = meta_a.pop("learned_inner_lr", None), meta_b.pop("learned_inner_lr", None)
    assert meta_a == expected
    assert meta_b == expected
    if "--inner-lr-learned" in extra:
        # log α moved away from log(--inner-lr), and resumed bit for bit with its Adam.
        assert learned_a["granularity"] == learned_b["granularity"] == extra[extra.index("--inner-lr-learned") + 1]
        for sa, sb in zip(learned_a["log_lrs"], learned_b["log_lrs"]):
            assert torch.equal(sa, sb)
        assert any(not torch.allclose(sa, torch.full_like(sa, math.log(0.05))) for sa in learned_a["log_lrs"])
        _assert_same_optimizer_state(learned_a["adam"], learned_b["adam"])
    else:
        assert learned_a is None and learned_b is None


def test_meta_optimizer_state_is_restored_from_the_checkpoint(corpus, tmp_path, uninterrupted_k1):
    """num_inner_steps comes from the checkpoint, not recomputed from num_updates:
    plant a value no run could produce and resume from it."""
    save = tmp_path / "planted"
    save.mkdir()
    state = _load(uninterrupted_k1)
    state["last_optimizer_state"]["fairseq_meta"]["num_inner_steps"] = 1000
    torch.save(state, save / "checkpoint_last.pt")

    train(corpus, save, *_meta_args(1, "first"), "--max-update", "8")
    resumed = _load(save / "checkpoint_last.pt")
    assert resumed["optimizer_history"][-1]["num_updates"] == 8
    assert resumed["last_optimizer_state"]["fairseq_meta"]["num_inner_steps"] == 1000 + 2


# --- fine-tuning with stock fairseq -----------------------------------------

def _sst2_rows(n):
    """Short SST-2 sentences (whitespace-tokenized already) with 0/1 labels."""
    path = SHARED_DATA / "glue" / "SST-2" / "train.tsv"
    if path.exists():
        with open(path, encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        rows = [(s.strip(), label) for s, label in rows if 3 <= len(s.split()) <= 20]
    else:
        words = "the film is good bad great dull fine awful".split()
        rows = [(" ".join(words[i % 9:] + words[: i % 5]), str(i % 2)) for i in range(200)]
    return rows[:n]


def _preprocess(trainpref, destdir, srcdict=None):
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
           "--trainpref", str(trainpref), "--validpref", str(trainpref),
           "--destdir", str(destdir), "--workers", "1"]
    if srcdict:
        cmd += ["--srcdict", str(srcdict)]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def classification_data(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("sst2_tiny")
    rows = _sst2_rows(60)
    assert {label for _, label in rows} == {"0", "1"}
    raw = root / "raw"
    raw.mkdir()
    (raw / "train.input0").write_text("\n".join(s for s, _ in rows) + "\n", encoding="utf-8")
    (raw / "train.label").write_text("\n".join(label for _, label in rows) + "\n", encoding="utf-8")
    _preprocess(raw / "train.input0", root / "input0", srcdict=corpus / "dict.txt")
    _preprocess(raw / "train.label", root / "label")
    shutil.rmtree(raw)
    return root


@pytest.mark.parametrize("run", list(RUNS))
def test_pretrained_weights_fine_tune_in_stock_roberta(run, classification_data, uninterrupted, tmp_path):
    """Stock --task sentence_prediction loads the meta-pretrained encoder (and,
    after NSP pre-training, drops the extra next_sentence_head with a warning)."""
    pretrained = uninterrupted(run)
    pre = model_weights(pretrained)
    nsp = "--sentence-objective" in RUNS[run][2]
    assert any(k.startswith("classification_heads.next_sentence_head.") for k in pre) == nsp

    save = tmp_path / "finetune"
    proc = run_cli("train", [
        classification_data, "--save-dir", save, "--user-dir", USER_DIR,
        "--task", "sentence_prediction", "--criterion", "sentence_prediction",
        "--optimizer", "adam", "--lr", "1e-7", *TINY_ROBERTA, "--max-positions", "32",
        "--restore-file", pretrained, "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", "--num-classes", "2", "--cpu", "--batch-size", "8",
        "--max-update", "1", "--log-format", "simple", "--log-interval", "1",
        "--num-workers", "0", "--no-epoch-checkpoints",
    ])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Loaded checkpoint {pretrained}" in log
    assert ("deleting classification head (next_sentence_head)" in log) == nsp

    tuned = _load(save / "checkpoint_last.pt")
    assert tuned["optimizer_history"][-1]["num_updates"] == 1
    weights = tuned["model"]
    assert any(k.startswith("classification_heads.sentence_classification_head.") for k in weights)
    assert not any(k.startswith("classification_heads.next_sentence_head.") for k in weights)

    encoder = [k for k in pre if k.startswith("encoder.")]
    assert encoder and set(encoder) == {k for k in weights if k.startswith("encoder.")}
    # One Adam step of lr 1e-7 moves a weight by about 1e-7; a re-initialized
    # encoder would be ~1e-2 away.
    worst = max((weights[k].float() - pre[k].float()).abs().max().item() for k in encoder)
    assert worst < 1e-5, f"encoder moved by {worst}: pre-trained weights were not loaded"
    assert worst > 0, "the fine-tuning update did not reach the encoder"


# --- torch.load as fairseq.checkpoint_utils sees it ---------------------------

def _python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD_S)


def test_plugin_makes_only_checkpoint_utils_load_weights_only(uninterrupted_k1):
    """One fresh interpreter: stock fairseq refuses its own checkpoint on this
    torch (the negative control); after ``import fairseq_meta``,
    ``checkpoint_utils.load_checkpoint_to_cpu`` loads it weights-only (plain
    ``torch.load(weights_only=False)`` is never called) and a MetaAdam restores its
    counters from it, while ``torch.load`` itself is untouched and still refuses it."""
    proc = _python(f"""
        import os, pickle, sys
        import torch
        os.environ.pop("FAIRSEQ_META_TRUST_CHECKPOINTS", None)
        original_load = torch.load
        from fairseq import checkpoint_utils
        path = {str(uninterrupted_k1)!r}

        try:
            checkpoint_utils.load_checkpoint_to_cpu(path)
        except pickle.UnpicklingError as e:
            assert "Weights only load failed" in str(e), e
            print("STOCK REFUSED")
        else:
            print("STOCK LOADED")

        import fairseq_meta

        calls = []
        def spy(*args, **kwargs):
            calls.append(kwargs.get("weights_only"))
            return original_load(*args, **kwargs)
        torch.load = spy
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        torch.load = original_load
        assert "model" in state
        assert calls == [True], calls

        # The meta optimizer's counters come back through fairseq's own loader.
        from fairseq.optim import build_optimizer
        optim_state = state["last_optimizer_state"]
        params = [torch.nn.Parameter(torch.zeros_like(optim_state["state"][i]["exp_avg"]))
                  for i in optim_state["param_groups"][0]["params"]]
        fresh = build_optimizer(state["cfg"].optimizer, params)
        assert type(fresh).__name__ == "MetaAdam", type(fresh)
        assert fresh.num_inner_steps == 0
        fresh.load_state_dict(optim_state)
        assert fresh.num_inner_steps == 6, fresh.num_inner_steps
        assert fresh.state_dict()["fairseq_meta"]["num_inner_steps"] == 6

        # torch.load itself is untouched and still refuses the file.
        assert torch.load is original_load
        try:
            torch.load(path)
        except pickle.UnpicklingError as e:
            assert "Weights only load failed" in str(e), e
        else:
            raise AssertionError("plain torch.load accepted the checkpoint")

        assert checkpoint_utils.torch.load is not torch.load
        patched = sorted(
            name for name, module in list(sys.modules.items())
            if name.startswith("fairseq") and hasattr(module, "torch")
            and getattr(module, "torch") is not torch
            and getattr(getattr(module, "torch"), "__name__", None) == "torch"
        )
        assert patched == ["fairseq.checkpoint_utils"], patched
        print("OK")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "OK"
    # On torch < 2.6 stock fairseq loads its checkpoints itself; here it must not.
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        assert "STOCK REFUSED" in lines
