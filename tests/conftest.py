"""Shared fixtures: small binarized corpora cut from real text, and a runner for
the fairseq command-line tools exactly as users call them."""
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
USER_DIR = str(REPO / "fairseq_meta")
SHARED_DATA = REPO.parent / "shared" / "data"

# Every subprocess a test starts is killed after this long: a guard against a hang,
# never a timing assertion. The slowest single subprocess of the suite
# (scripts/reproduce_verdict.py --quick) took 572 s on an idle 2-core machine and
# under 900 s on a loaded one; this is 4x that (issue 22).
HANG_GUARD_S = 3600

# A RoBERTa small enough for CPU tests; dropout 0 where tests compare numbers.
TINY_ROBERTA = [
    "--arch", "roberta_base", "--encoder-layers", "2", "--encoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
]
META = ["--user-dir", USER_DIR, "--task", "meta_masked_lm", "--criterion", "meta_masked_lm",
        "--optimizer", "meta_adam"]
TRAIN_DEFAULTS = ["--cpu", "--tokens-per-sample", "32", "--batch-size", "4", "--lr", "1e-3",
                  "--log-format", "simple", "--log-interval", "1", "--num-workers", "0",
                  "--no-epoch-checkpoints"]


def _text_lines(source, max_lines):
    """Real English text: the shared WikiText-2 / Gutenberg files, else the Python
    standard library's docstrings (present wherever the project installs)."""
    if source.exists():
        with open(source, encoding="utf-8-sig") as f:
            return [line.rstrip("\n") for _, line in zip(range(max_lines), f)]
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "stdlib_corpus.py"), "--out", "/dev/stdout"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.splitlines()[:max_lines]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def binarize(destdir, train_lines, valid_lines, srcdict=None, nwords=800):
    destdir = Path(destdir)
    destdir.mkdir(parents=True, exist_ok=True)
    raw = destdir / "raw"
    raw.mkdir(exist_ok=True)
    cmd = [
        sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
        "--trainpref", str(_write(raw / "train.txt", train_lines)),
        "--validpref", str(_write(raw / "valid.txt", valid_lines)),
        "--destdir", str(destdir), "--workers", "1",
    ]
    cmd += ["--srcdict", str(srcdict)] if srcdict else ["--nwordssrc", str(nwords)]
    subprocess.run(cmd, check=True, capture_output=True)
    shutil.rmtree(raw)
    return destdir


def test_seed(config):
    """The seed every test's random state starts from: pytest-randomly's
    ``--randomly-seed`` when the plugin is active (CI runs it with a fixed,
    printed seed), else 0."""
    seed = getattr(config.option, "randomly_seed", None)
    return seed if isinstance(seed, int) else 0


@pytest.fixture(autouse=True)
def same_random_state_whatever_ran_before(request):
    """Every test starts from the same torch, numpy and ``random`` state, whatever
    ran before it in its process. Without this a model built without an explicit
    seed (most in-process tests) is initialised from the torch generator as the
    previous tests in the same pytest-xdist worker left it, and which tests those
    are changes with the machine's load (issue 23: a finite-difference check
    passed for one initialisation and not another)."""
    import numpy as np

    seed = test_seed(request.config)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@pytest.fixture(scope="session")
def wiki_lines():
    return _text_lines(SHARED_DATA / "wikitext-2" / "valid.txt", 700)


@pytest.fixture(scope="session")
def book_lines():
    lines = _text_lines(SHARED_DATA / "gutenberg" / "nltk-selections" / "austen-emma.txt", 1800)
    return lines[-900:]  # without the shared data: other docstrings than wiki_lines


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, wiki_lines):
    """One binarized corpus: dict.txt, train.*, valid.* (documents separated by blank lines)."""
    return binarize(tmp_path_factory.mktemp("wiki"), wiki_lines[:600], wiki_lines[600:])


@pytest.fixture(scope="session")
def two_corpora(tmp_path_factory, corpus, wiki_lines, book_lines):
    """A data directory with one subdirectory per corpus, all with the same dict.txt."""
    root = tmp_path_factory.mktemp("two_corpora")
    shutil.copytree(corpus, root / "wiki")
    binarize(root / "books", book_lines[:700], book_lines[700:], srcdict=corpus / "dict.txt")
    return root


@pytest.fixture
def float64_fairseq(monkeypatch):
    """fairseq computes gelu and the loss's log-softmax in float32; finite
    differences need the whole computation in float64."""
    import fairseq.modules
    import torch.nn.functional as nnf

    monkeypatch.setattr(fairseq.modules, "gelu", lambda x: nnf.gelu(x))
    monkeypatch.setattr(
        fairseq.modules, "cross_entropy",
        lambda logits, target, ignore_index=-100, reduction="mean": nnf.cross_entropy(
            logits, target, ignore_index=ignore_index, reduction=reduction),
    )


def assert_matches_finite_differences(model, grads, loss_at, rel, directions=3, eps=1e-5):
    """``grads`` (name -> tensor) against finite differences of
    ``loss_at(shifted_model)`` along random directions (seeded), in float64.

    The derivative is Richardson's extrapolation of two central differences,
    (4 D(ε/2) − D(ε)) / 3, whose error is O(ε⁴) instead of the central
    difference's O(ε²). With a large inner step the meta-test loss is strongly
    curved: one plain central difference at ε = 1e-6 was off by 1.3e-6 of the
    derivative for one initialisation of the test model (its error fell 100x per
    10x smaller ε, so it was truncation, not rounding), where this estimate
    stays below 1e-9 over 16 initialisations (issue 23)."""
    import copy

    def loss_shifted(scale, direction):
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in shifted.named_parameters():
                p += scale * direction[n]
        return loss_at(shifted)

    def central(h, direction):
        return (loss_shifted(h, direction) - loss_shifted(-h, direction)) / (2 * h)

    generator = torch.Generator().manual_seed(0)
    for _ in range(directions):
        direction = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype)
                     for n, p in model.named_parameters()}
        fd = (4 * central(eps / 2, direction) - central(eps, direction)) / 3
        analytic = sum((grads[n] * direction[n]).sum().item() for n in grads)
        assert analytic == pytest.approx(fd, rel=rel), (analytic, fd)


def cli_env():
    # One thread: runs compared bit for bit must reduce in the same order.
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def run_cli(tool, args, cwd=None, timeout=HANG_GUARD_S):
    """Run ``fairseq-<tool>`` as a user would (a fresh process)."""
    return subprocess.run(
        [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=cli_env(),
    )


def train(data, save_dir, *args, check=True):
    proc = run_cli("train", [data, "--save-dir", save_dir, *TRAIN_DEFAULTS, *TINY_ROBERTA, *args])
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def model_weights(checkpoint):
    from fairseq_meta.checkpoints import load_checkpoint

    return load_checkpoint(checkpoint)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def run_script(name, *args, cwd=None):
    """Run one of scripts/ as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=HANG_GUARD_S,
    )


def spm_binarize(root, lines, vocab_size=300):
    """Pre-training data as users make it: sentencepiece model + dict.txt +
    binarized splits from scripts/prepare_corpus.py, in ROOT/bin."""
    text = root / "text.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    check_ok(run_script("prepare_corpus.py", "--destdir", root / "bin", "--vocab-size",
                        vocab_size, text))
    return root / "bin"


def check_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc
