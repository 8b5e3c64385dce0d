"""Bad input is refused before training starts: one ``train.py: error: ...``
line naming the flag or path, a non-zero exit status, and no file written."""
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import META, train

MASKED_LM = ["--task", "masked_lm", "--criterion", "masked_lm"]

# id: (data directory key, extra flags, substrings the error line must contain)
CASES = {
    "negative-meta-train-steps": ("corpus", ["--meta-train-steps", "-1"], ["--meta-train-steps"]),
    "inner-lr-zero": ("corpus", ["--inner-lr", "0"], ["--inner-lr"]),
    "inner-lr-negative": ("corpus", ["--inner-lr", "-1"], ["--inner-lr"]),
    "missing-data-dir": ("missing", [], ["{data}"]),
    "unknown-corpus": ("two_corpora", ["--corpora", "wiki,news"], ["--corpora", "news"]),
    "different-dictionaries": ("mismatched", [], ["different dictionaries", "{data}/books/dict.txt"]),
    "empty-corpus": ("empty", [], ["{data}/train", "empty"]),
    "blank-lines-corpus": ("blank", [], ["{data}/train", "empty"]),
    "unknown-sentence-objective": ("corpus", ["--sentence-objective", "sop"], ["--sentence-objective", "sop"]),
    "meta-steps-with-adam": (
        "corpus", ["--meta-train-steps", "1", "--optimizer", "adam"], ["--meta-train-steps", "--optimizer adam"]
    ),
    "meta-adam-with-masked-lm": (
        "corpus", [*MASKED_LM, "--optimizer", "meta_adam"], ["--optimizer meta_adam", "masked_lm"]
    ),
    "corpora-on-single-corpus": ("corpus", ["--corpora", "wiki"], ["--corpora", "{data}"]),
    "negative-sampling-alpha": ("two_corpora", ["--corpus-sampling-alpha", "-1"], ["--corpus-sampling-alpha"]),
    "meta-order-third": ("corpus", ["--meta-order", "third"], ["--meta-order", "third"]),
    "inner-preconditioner-unknown": (
        "corpus", ["--inner-preconditioner", "rmsprop"], ["--inner-preconditioner", "rmsprop"]
    ),
    "log-adaptation-interval-negative": (
        "corpus", ["--log-adaptation-interval", "-1"], ["--log-adaptation-interval", "-1"]
    ),
    "valid-adapt-steps-negative": ("corpus", ["--valid-adapt-steps", "-2"], ["--valid-adapt-steps", "-2"]),
    "episode-cannot-be-formed": ("corpus", ["--meta-train-steps", "500"], ["--meta-train-steps 500", "episode"]),
    "meta-objective-unknown": ("corpus", ["--meta-objective", "fomaml"], ["--meta-objective", "fomaml"]),
    "reptile-second-order": (
        "corpus", ["--meta-objective", "reptile", "--meta-order", "second"],
        ["--meta-objective reptile", "--meta-order second"]
    ),
    "learned-inner-lr-reptile-k1": (
        "corpus", ["--meta-objective", "reptile", "--inner-lr-learned", "tensor"],
        ["--inner-lr-learned tensor", "--meta-train-steps >= 2"]
    ),
    "learned-inner-lr-with-adam": (
        "corpus", ["--meta-train-steps", "0", "--optimizer", "adam", "--inner-lr-learned", "tensor"],
        ["--inner-lr-learned"]
    ),
    "inner-lr-lr-zero": ("corpus", ["--inner-lr-learned", "tensor", "--inner-lr-lr", "0"], ["--inner-lr-lr"]),
    "inner-lr-learned-unknown": ("corpus", ["--inner-lr-learned", "layer"], ["--inner-lr-learned", "layer"]),
    "empty-valid-split": ("empty_valid", [], ["{data}/valid", "at least 1 block", "--disable-validation"]),
    "missing-valid-split": ("corpus", ["--valid-subset", "test"], ["'test' split", "--disable-validation"]),
}


def _preprocess(destdir, train_text, srcdict, valid_text="the valid split is fine\n"):
    destdir.mkdir(parents=True)
    (destdir / "train.txt").write_text(train_text, encoding="utf-8")
    (destdir / "valid.txt").write_text(valid_text, encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
         "--trainpref", str(destdir / "train.txt"), "--validpref", str(destdir / "valid.txt"),
         "--destdir", str(destdir), "--srcdict", str(srcdict), "--workers", "1"],
        check=True, capture_output=True,
    )
    (destdir / "train.txt").unlink()
    (destdir / "valid.txt").unlink()
    return destdir


@pytest.fixture(scope="module")
def data_dirs(corpus, two_corpora, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_data")
    mismatched = root / "mismatched"
    shutil.copytree(two_corpora, mismatched)
    lines = (mismatched / "books" / "dict.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]  # same words, two ids swapped
    (mismatched / "books" / "dict.txt").write_text("".join(lines), encoding="utf-8")
    with ThreadPoolExecutor(2) as pool:
        empty = pool.submit(_preprocess, root / "empty", "", corpus / "dict.txt")
        blank = pool.submit(_preprocess, root / "blank", "\n   \n\t\n\n", corpus / "dict.txt")
        empty_valid = pool.submit(_preprocess, root / "empty_valid", "the train split is fine\n" * 50,
                                  corpus / "dict.txt", valid_text="")
        empty, blank, empty_valid = empty.result(), blank.result(), empty_valid.result()
    return {
        "corpus": corpus, "two_corpora": two_corpora, "missing": root / "no_such_dir",
        "mismatched": mismatched, "empty": empty, "blank": blank, "empty_valid": empty_valid,
    }


@pytest.fixture(scope="module")
def results(request, data_dirs, tmp_path_factory):
    """The fairseq-train run of every selected case, two at a time (each exits
    within seconds, so starting the interpreters dominates)."""
    root = tmp_path_factory.mktemp("bad_runs")
    selected = [
        item.callspec.params["case"] for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
        and "case" in item.callspec.params
    ]

    def run(case):
        key, flags, _ = CASES[case]
        save = root / case
        proc = train(data_dirs[key], save, *META, *flags, "--max-update", "2", check=False)
        return case, (proc, save, data_dirs[key])

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(run, dict.fromkeys(selected or CASES)))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(case, results):
    proc, save, data = results[case]
    expected = [s.format(data=data) for s in CASES[case][2]]
    stderr = proc.stderr

    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, f"nothing on stderr; stdout:\n{proc.stdout[-2000:]}"
    last = lines[-1]
    assert last.startswith("train.py: error: "), last
    for text in expected:
        assert text in last, f"{text!r} not in {last!r}"
    # Exactly one error line (argparse's own refusals print the usage above it).
    assert [line for line in lines if "error" in line] == [last], stderr[-3000:]
    if proc.returncode != 2:  # not argparse: nothing but the one line
        assert lines == [last], stderr[-3000:]
    assert "begin training epoch" not in proc.stdout
    written = [p for p in save.rglob("*") if not p.is_dir()] if save.exists() else []
    assert not written, f"wrote {written}"

