"""Checkpoints load without running code from them: weights-only with a minimal
allowlist (fairseq_meta/checkpoints.py), on every route fairseq loads one by.

- Every kind of checkpoint the project writes loads under the allowlist, and
  together they need every entry of it (it is minimal).
- A crafted checkpoint whose unpickling would create a file is refused by
  resume, --restore-file, --finetune-from-model, fairseq-hydra-train fine-tuning
  and the hub loader, in one line, and the file is never created.
- FAIRSEQ_META_TRUST_CHECKPOINTS=1 loads a file with an extra harmless global;
  without it the same file is refused.
"""
import fractions
import pathlib

import pytest
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

import conftest
from conftest import META, REPO, USER_DIR, binarize, run_cli, train
from fairseq_meta.checkpoints import ALLOWLIST, TRUST_ENV, load_checkpoint
from fairseq_meta.errors import MetaConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ALLOWED = {f"{g.__module__}.{g.__qualname__}" for g in ALLOWLIST}
TINY_HYDRA = ["model.encoder_layers=2", "model.encoder_embed_dim=32",
              "model.encoder_ffn_embed_dim=64", "model.encoder_attention_heads=2",
              "common.cpu=true", "optimization.max_update=2", "lr_scheduler.warmup_updates=0",
              "dataset.batch_size=4", "dataset.num_workers=0", "common.log_format=simple"]


@pytest.fixture(autouse=True)
def _not_trusted(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


class _TouchOnLoad:
    """Unpickling this calls ``pathlib.Path(marker).touch()``: code that a
    checkpoint runs on the machine that loads it."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _meta(k, *extra):
    return [*META, "--meta-train-steps", str(k), "--inner-lr", "0.05", "--max-update", "2",
            "--seed", "4", *extra]


@pytest.fixture(scope="module")
def labeled(corpus, tmp_path_factory, wiki_lines):
    """Two tiny labeled tasks binarized with the corpus dictionary: A (2 classes,
    fairseq's sentence_prediction layout) and B (regression)."""
    root = tmp_path_factory.mktemp("labeled")
    sentences = [line for line in wiki_lines if len(line.split()) >= 4][:80]
    train_s, valid_s = sentences[:60], sentences[60:]
    for name in ("A", "B"):
        binarize(root / name / "input0", train_s, valid_s, srcdict=corpus / "dict.txt")
    binarize(root / "A" / "label", [str(i % 2) for i in range(60)], [str(i % 2) for i in range(20)])
    (root / "B" / "label").mkdir()
    for split, n in (("train", 60), ("valid", 20)):
        (root / "B" / "label" / f"{split}.label").write_text(
            "".join(f"{(i % 5) / 2:.1f}\n" for i in range(n)))
    return root


def _hydra(config_dir, name, save, *overrides):
    return run_cli("hydra_train", [
        "--config-dir", config_dir, "--config-name", name, f"common.user_dir={USER_DIR}",
        f"checkpoint.save_dir={save}", f"hydra.run.dir={save / 'hydra'}", *TINY_HYDRA, *overrides])


def _check(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


COMMAND_LINE = {"argparse.Namespace"}  # fairseq-train stores its parsed arguments
HYDRA = set()  # fairseq-hydra-train stores plain containers
# kind: (the file, what get_unsafe_globals_in_checkpoint must list)
KINDS = {
    "meta_masked_lm-k0": ("checkpoint_last.pt", COMMAND_LINE),
    "meta_masked_lm-k1": ("checkpoint_last.pt", COMMAND_LINE),
    "meta_masked_lm-k2-second-order-nsp": ("checkpoint_last.pt", COMMAND_LINE),
    "meta_masked_lm-no-optimizer-state": ("checkpoint_last.pt", COMMAND_LINE),
    "meta_masked_lm-memory-efficient-fp16": ("checkpoint_last.pt", COMMAND_LINE),
    "meta_masked_lm-bf16-hydra": ("checkpoint_last.pt", HYDRA),
    "crash.pt": ("crash.pt", COMMAND_LINE),
    "masked_lm": ("checkpoint_last.pt", COMMAND_LINE),
    "meta_sentence_prediction": ("checkpoint_last.pt", COMMAND_LINE),
    "sentence_prediction-finetuned": ("checkpoint_best.pt", HYDRA),
}


def _make(kind, corpus, labeled, save, get):
    """Train the run that writes a checkpoint of *kind* into *save*."""
    if kind == "meta_masked_lm-k0":
        train(corpus, save, *_meta(0))
    elif kind == "meta_masked_lm-k1":
        train(corpus, save, *_meta(1))
    elif kind == "meta_masked_lm-k2-second-order-nsp":
        train(corpus, save, *_meta(2, "--meta-order", "second", "--sentence-objective", "nsp"))
    elif kind == "meta_masked_lm-no-optimizer-state":
        train(corpus, save, *_meta(1, "--no-save-optimizer-state"))
    elif kind == "meta_masked_lm-memory-efficient-fp16":
        # on CPU the weights stay fp32, but the fp16 wrapper's state (loss_scale) is saved
        train(corpus, save, *_meta(1, "--memory-efficient-fp16"))
    elif kind == "meta_masked_lm-bf16-hydra":
        # fairseq-train --bf16 means a TPU; fairseq-hydra-train runs bf16 on CPU
        _check(_hydra(REPO / "configs" / "pretrain", "meta_masked_lm_tiny", save,
                      f"task.data={corpus}", "task.tokens_per_sample=32", "common.bf16=true",
                      "common.tensorboard_logdir=null"))
    elif kind == "crash.pt":  # as tests/test_faults.py: NaN in the second inner step
        train(corpus, save, *META, "--meta-train-steps", "2", "--inner-lr", "1e30",
              "--max-update", "3", check=False)
    elif kind == "masked_lm":
        train(corpus, save, "--task", "masked_lm", "--criterion", "masked_lm",
              "--optimizer", "adam", "--max-update", "2", "--seed", "4")
    elif kind == "meta_sentence_prediction":
        defaults = [a for a in conftest.TRAIN_DEFAULTS if a not in ("--tokens-per-sample", "32")]
        _check(run_cli("train", [
            labeled, "--save-dir", save, *defaults, *conftest.TINY_ROBERTA,
            "--user-dir", USER_DIR, "--task", "meta_sentence_prediction",
            "--criterion", "meta_sentence_prediction", "--optimizer", "meta_adam",
            "--tasks", "A,B", "--meta-train-steps", "1", "--max-positions", "32",
            "--shorten-method", "truncate", "--max-update", "2"]))
    elif kind == "sentence_prediction-finetuned":
        # configs/finetune (stock sentence_prediction) from the k = 1 pre-training checkpoint
        _check(_hydra(REPO / "configs" / "finetune", "sst_2", save, f"task.data={labeled / 'A'}",
                      "task.max_positions=32", "common.fp16=false",
                      f"checkpoint.restore_file={get('meta_masked_lm-k1')}"))


@pytest.fixture(scope="module")
def kinds(corpus, labeled, tmp_path_factory):
    """kind -> checkpoint file (made on first use)."""
    made = {}

    def get(kind):
        if kind not in made:
            filename, _ = KINDS[kind]
            save = tmp_path_factory.mktemp(kind)
            _make(kind, corpus, labeled, save, get)
            made[kind] = save / filename
            assert made[kind].is_file(), f"{kind}: no {filename}"
        return made[kind]

    return get


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_checkpoint_loads_under_the_allowlist(kind, kinds):
    from fairseq import checkpoint_utils

    path = kinds(kind)
    assert set(get_unsafe_globals_in_checkpoint(str(path))) == KINDS[kind][1]
    raw = load_checkpoint(path)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["model"].keys() == raw["model"].keys() and state["model"]
    assert ("last_optimizer_state" in raw) == (kind != "meta_masked_lm-no-optimizer-state")
    if kind == "meta_masked_lm-memory-efficient-fp16":
        assert "loss_scale" in raw["last_optimizer_state"]
    if kind == "meta_masked_lm-bf16-hydra":
        assert state["cfg"].common.bf16


def test_the_allowlist_is_minimal():
    """Every entry is needed by some kind of checkpoint above."""
    assert set().union(*(needed for _, needed in KINDS.values())) == ALLOWED


# --- a checkpoint that would run code -----------------------------------------

@pytest.fixture(scope="module")
def base(kinds):
    """A real checkpoint (meta_masked_lm, k = 1, 2 updates) to plant things in."""
    return kinds("meta_masked_lm-k1")


def _plant(base, dest, value):
    state = load_checkpoint(base)
    state["extra_state"]["planted"] = value
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dest)
    return dest


@pytest.fixture
def evil(base, tmp_path):
    """(crafted checkpoint, marker): unpickling it in full creates the marker."""
    marker = tmp_path / "MARKER"
    path = _plant(base, tmp_path / "evil" / "checkpoint_last.pt", _TouchOnLoad(marker))
    # Positive control: the file really runs its code when unpickled in full.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def _assert_refused_in_one_line(proc, path):
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"error: refusing to load checkpoint {path}: it needs " in err[-1], err[-3:]
    assert "pathlib.Path" in err[-1] and f"{TRUST_ENV}=1" in err[-1]
    assert sum("error:" in line for line in err) == 1, err


def _train_args(corpus, save, *extra):
    return [corpus, "--save-dir", save, *conftest.TRAIN_DEFAULTS, *conftest.TINY_ROBERTA,
            *_meta(1), "--max-update", "4", *extra]


@pytest.mark.parametrize("route", ["resume", "restore-file", "finetune-from-model"])
def test_crafted_checkpoint_is_refused_by_fairseq_train(route, evil, corpus, tmp_path):
    path, marker = evil
    if route == "resume":  # checkpoint_last.pt in --save-dir
        save, extra = path.parent, []
    else:
        save, extra = tmp_path / "save", [f"--{route}", path]
    proc = run_cli("train", _train_args(corpus, save, *extra))
    _assert_refused_in_one_line(proc, path)
    assert not marker.exists()
    assert sorted(p.name for p in save.glob("*.pt")) == (["checkpoint_last.pt"] if route == "resume" else [])


def test_crafted_checkpoint_is_refused_by_hydra_finetuning(evil, labeled, tmp_path):
    path, marker = evil
    proc = _hydra(REPO / "configs" / "finetune", "sst_2", tmp_path / "ft", f"task.data={labeled / 'A'}",
                  "task.max_positions=32", "common.fp16=false", f"checkpoint.restore_file={path}")
    _assert_refused_in_one_line(proc, path)
    assert not marker.exists()
    assert not list((tmp_path / "ft").glob("*.pt"))


def test_crafted_checkpoint_is_refused_by_the_hub_loader(evil, base, corpus):
    from fairseq import hub_utils
    from fairseq.models.roberta import RobertaModel

    path, marker = evil
    for load in (
        lambda: RobertaModel.from_pretrained(str(path.parent), checkpoint_file=path.name,
                                             data_name_or_path=str(corpus)),
        lambda: hub_utils.from_pretrained(str(path.parent), checkpoint_file=path.name,
                                          data_name_or_path=str(corpus)),
    ):
        with pytest.raises(MetaConfigError) as refused:
            load()
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"refusing to load checkpoint {path}: it needs ")
        assert not marker.exists()

    # The hub interface still loads the plugin's own checkpoints (no BPE: the
    # default, GPT-2's, would be downloaded).
    hub = RobertaModel.from_pretrained(str(base.parent), checkpoint_file=base.name,
                                       data_name_or_path=str(corpus), bpe=None)
    conftest.assert_same_weights(hub.model.state_dict(), load_checkpoint(base)["model"])


def test_crafted_checkpoint_is_refused_by_the_finetuning_driver(evil):
    """fairseq_meta.run.finetune (scripts/finetune_glue.py) reads the model size from
    the checkpoint before it starts fairseq-hydra-train."""
    from fairseq_meta.run import finetune

    path, marker = evil
    with pytest.raises(MetaConfigError, match=f"^refusing to load checkpoint {path}: it needs "):
        finetune.read_pretrained(path)
    assert not marker.exists()


def test_upstream_style_weights_only_false_is_not_obeyed(evil):
    """fairseq main passes weights_only=False to torch.load in checkpoint_utils;
    through the plugin that still gets the weights-only load."""
    from fairseq import checkpoint_utils

    path, marker = evil
    with open(path, "rb") as f, pytest.raises(MetaConfigError):
        checkpoint_utils.torch.load(f, map_location=torch.device("cpu"), weights_only=False)
    assert not marker.exists()


# --- the opt-in ------------------------------------------------------------------

def test_opt_in_loads_a_checkpoint_with_an_extra_global(base, corpus, tmp_path, monkeypatch):
    path = _plant(base, tmp_path / "save" / "checkpoint_last.pt", fractions.Fraction(1, 3))
    assert set(get_unsafe_globals_in_checkpoint(str(path))) == ALLOWED | {"fractions.Fraction"}

    with pytest.raises(MetaConfigError, match=r"it needs fractions\.Fraction, "):
        load_checkpoint(path)
    proc = run_cli("train", _train_args(corpus, path.parent))
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "it needs fractions.Fraction, " in err[-1]
    with pytest.raises(MetaConfigError):  # a caller's weights_only=False is no opt-in
        load_checkpoint(path, weights_only=False)

    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_checkpoint(path)["extra_state"]["planted"] == fractions.Fraction(1, 3)
    proc = run_cli("train", _train_args(corpus, path.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert f"Loaded checkpoint {path} (epoch 1 @ 2 updates)" in log
    assert f"{TRUST_ENV}=1: loading {path} with weights_only=False" in log
    resumed = load_checkpoint(path)  # written by fairseq: needs only the allowlist again
    assert resumed["optimizer_history"][-1]["num_updates"] == 4
    assert "planted" not in resumed["extra_state"]


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_opt_in_takes_only_0_or_1(base, monkeypatch, value):
    monkeypatch.setenv(TRUST_ENV, value)
    with pytest.raises(MetaConfigError, match=TRUST_ENV):
        load_checkpoint(base)


def test_opt_in_off_values_refuse(base, tmp_path, monkeypatch):
    path = _plant(base, tmp_path / "frac.pt", fractions.Fraction(1, 3))
    for value in ("0", ""):
        monkeypatch.setenv(TRUST_ENV, value)
        with pytest.raises(MetaConfigError, match="fractions.Fraction"):
            load_checkpoint(path)


def test_a_global_the_user_allowed_stays_allowed(base):
    """Leaving the allowlist context must not remove what the user added."""
    import argparse

    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([argparse.Namespace, fractions.Fraction])
    try:
        assert load_checkpoint(base)["model"]
        assert {argparse.Namespace, fractions.Fraction} <= set(torch.serialization.get_safe_globals())
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)
