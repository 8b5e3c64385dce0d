"""Tests of the corpus scripts: scripts/stdlib_corpus.py and scripts/prepare_corpus.py.

The scripts run as users run them (``python scripts/...`` in a fresh process).
prepare_corpus is fed small slices of the real shared data (WikiText-2 and a
Project Gutenberg book kept byte for byte: UTF-8 BOM, CRLF, PG header/footer).
"""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from conftest import check_ok, run_script  # noqa: E402
SHARED_DATA = REPO.parent / "shared" / "data"
WIKI = SHARED_DATA / "wikitext-2" / "valid.txt"
BOOK = SHARED_DATA / "gutenberg" / "pg-top-downloads" / "pg11.txt"  # Alice; BOM + CRLF
DATA_FILES = {"dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx"}




def decode_split(data_dir, split, spm_model):
    """The text of a binarized split: one string per line ('' between documents)."""
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(data_dir / "dict.txt"))
    dataset = data_utils.load_indexed_dataset(str(data_dir / split), dictionary)
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    lines = []
    for i in range(len(dataset)):
        tokens = dataset[i]
        assert tokens[-1] == dictionary.eos()
        lines.append(sp.decode_pieces(dictionary.string(tokens[:-1]).split()))
    return lines


# --------------------------------------------------------------------------- #
# stdlib_corpus.py
# --------------------------------------------------------------------------- #
def test_stdlib_corpus_writes_blank_line_separated_documents(tmp_path):
    out = tmp_path / "sub" / "stdlib.txt"
    proc = check_ok(run_script("stdlib_corpus.py", "--out", out, "--max-docs", "40"))
    assert proc.stdout.startswith("stdlib_corpus: wrote 40 documents")
    assert len(proc.stdout.strip().splitlines()) == 1

    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    documents = text[:-1].split("\n\n")
    assert len(documents) == 40
    assert len(set(documents)) == 40
    for doc in documents:
        lines = doc.split("\n")
        assert all(line.strip() == line and line for line in lines)  # no blank/indented lines
        assert not any(line.startswith(">>>") for line in lines)
        assert len(doc.split()) >= 20
    words = text.split()
    alphabetic = sum(w.strip(".,;:()'\"`").isalpha() for w in words)
    assert alphabetic > 0.7 * len(words), "expected mostly English prose"
    # Deterministic.
    check_ok(run_script("stdlib_corpus.py", "--out", tmp_path / "again.txt", "--max-docs", "40"))
    assert (tmp_path / "again.txt").read_text(encoding="utf-8") == text


def test_stdlib_corpus_help_and_errors(tmp_path):
    assert "--out" in check_ok(run_script("stdlib_corpus.py", "--help")).stdout
    proc = run_script("stdlib_corpus.py", "--out", tmp_path / "x.txt", "--max-docs", "0")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "stdlib_corpus: error: --max-docs must be >= 1 (got 0)"
    assert not (tmp_path / "x.txt").exists()


# --------------------------------------------------------------------------- #
# prepare_corpus.py on real data
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A few hundred lines of WikiText-2 and of a Gutenberg book (as stored)."""
    if not WIKI.is_file() or not BOOK.is_file():
        pytest.skip(f"shared data not found under {SHARED_DATA} "
                    "(needs wikitext-2/valid.txt and gutenberg/pg-top-downloads/pg11.txt)")
    root = tmp_path_factory.mktemp("raw")
    wiki = root / "wiki.txt"
    with open(WIKI, encoding="utf-8") as f:
        wiki.write_text("".join(line for _, line in zip(range(300), f)), encoding="utf-8")
    # The book keeps its BOM, CRLF line ends, PG header and footer: the header
    # up to 250 lines after the START marker, then the END marker and footer.
    book_lines = BOOK.read_bytes().split(b"\r\n")
    start = next(i for i, ln in enumerate(book_lines) if ln.startswith(b"*** START OF"))
    end = next(i for i, ln in enumerate(book_lines) if ln.startswith(b"*** END OF"))
    assert book_lines[0].startswith(b"\xef\xbb\xbf")
    book = root / "book.txt"
    book.write_bytes(b"\r\n".join(book_lines[:start + 250] + book_lines[end:end + 40]))
    return {"wiki": wiki, "book": book}


@pytest.fixture(scope="module")
def single(raw, tmp_path_factory):
    dest = tmp_path_factory.mktemp("single") / "data"
    proc = check_ok(run_script("prepare_corpus.py", "--destdir", dest, "--vocab-size", "1000",
                               raw["wiki"], raw["book"]))
    return dest, proc


def test_single_corpus_layout(single):
    dest, proc = single
    assert DATA_FILES | {"spm.model", "spm.vocab"} <= {p.name for p in dest.iterdir()}
    assert not [p for p in dest.iterdir() if p.is_dir()]
    # Nothing left next to the output (the staging directory is renamed into place).
    assert [p.name for p in dest.parent.iterdir()] == ["data"]
    assert "kept the text between the Project Gutenberg" in proc.stdout
    assert f"-> {dest}" in proc.stdout
    # The dictionary is built from the training text: none of its pieces is <unk>.
    assert "<unk> train 0.00%, valid " in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"sentencepiece model: {dest / 'spm.model'}"


def test_single_corpus_content(single):
    dest, _ = single
    train = decode_split(dest, "train", dest / "spm.model")
    valid = decode_split(dest, "valid", dest / "spm.model")
    text = "\n".join(train + valid)
    # Real text, Gutenberg header and footer stripped, BOM and CR gone.
    assert "Down the Rabbit-Hole" in text
    assert "European lobster" in text  # the first WikiText-2 validation article
    assert "gutenberg" not in text.lower()
    assert "\ufeff" not in text and "\r" not in text
    # Documents are separated by exactly one empty line; none is empty.
    for lines in (train, valid):
        assert lines[0] and lines[-1]
        assert all(a or b for a, b in zip(lines, lines[1:]))
    assert "" in train and len(valid) >= 1


def test_reuse_spm_model_and_dict_with_force(single, raw, tmp_path):
    dest, _ = single
    other = tmp_path / "other"
    other.mkdir()
    (other / "old.txt").write_text("stale\n")
    proc = run_script("prepare_corpus.py", "--destdir", tmp_path / "x", raw["wiki"],
                      "--spm-model", dest / "spm.model", "--dict", raw["wiki"])
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith("prepare_corpus: error: --dict ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
    check_ok(run_script("prepare_corpus.py", "--destdir", other, raw["wiki"], "--force",
                        "--spm-model", dest / "spm.model", "--dict", dest / "dict.txt"))
    assert not (other / "old.txt").exists()
    for name in ("dict.txt", "spm.model"):
        assert (other / name).read_bytes() == (dest / name).read_bytes()
    assert DATA_FILES <= {p.name for p in other.iterdir()}


def test_model_and_dictionary_of_different_runs_are_refused(single, raw, tmp_path):
    """Another run's dict.txt with this run's spm.model would map most tokens to
    <unk>: refused with one line before anything is written."""
    dest, _ = single
    other = tmp_path / "other"
    check_ok(run_script("prepare_corpus.py", "--destdir", other, "--vocab-size", "1000",
                        raw["book"]))
    proc = run_script("prepare_corpus.py", "--destdir", tmp_path / "x", raw["wiki"],
                      "--spm-model", dest / "spm.model", "--dict", other / "dict.txt")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", proc.stderr
    assert lines[0].startswith(f"prepare_corpus: error: --dict {other / 'dict.txt'} does not "
                               f"belong to --spm-model {dest / 'spm.model'}: ")
    assert not (tmp_path / "x").exists()


def test_two_corpus_layout_shares_one_dictionary(raw, tmp_path):
    dest = tmp_path / "multi"
    proc = check_ok(run_script("prepare_corpus.py", "--destdir", dest, "--vocab-size", "1000",
                               "--corpus", f"wiki={raw['wiki']}",
                               "--corpus", f"book={raw['book']}", "--workers", "2"))
    assert {"wiki", "book", "spm.model", "spm.vocab", "dict.txt"} <= {
        p.name for p in dest.iterdir()}
    assert not (dest / "train.bin").exists()
    for name in ("wiki", "book"):
        assert DATA_FILES <= {p.name for p in (dest / name).iterdir()}
        assert (dest / name / "dict.txt").read_bytes() == (dest / "dict.txt").read_bytes()
        assert f"-> {dest / name}" in proc.stdout
    book = "\n".join(decode_split(dest / "book", "train", dest / "spm.model"))
    assert "Down the Rabbit-Hole" in book and "gutenberg" not in book.lower()
    assert "lobster" not in book


# --------------------------------------------------------------------------- #
# prepare_corpus.py errors: one line, non-zero exit, nothing created
# --------------------------------------------------------------------------- #
ERROR_CASES = {
    "missing input": (lambda t, r: [t / "nope.txt"], "input not found:"),
    "empty input": (lambda t, r: [t / "empty.txt"], "no text in"),
    "blank input": (lambda t, r: [t / "blank.txt"], "no text in"),
    "NAME=PATH syntax": (lambda t, r: ["--corpus", str(r["wiki"])], "expects NAME=PATH"),
    "empty name": (lambda t, r: ["--corpus", f"={r['wiki']}"], "expects NAME=PATH"),
    "duplicate name": (lambda t, r: ["--corpus", f"a={r['wiki']}", "--corpus", f"a={r['book']}"],
                       "duplicate corpus name 'a'"),
    "paths and --corpus": (lambda t, r: [r["wiki"], "--corpus", f"b={r['book']}"],
                           "not both"),
    "no input": (lambda t, r: [], "no input"),
    "bad spm model": (lambda t, r: [r["wiki"], "--spm-model", r["wiki"]],
                      "cannot load sentencepiece model"),
    "dict without spm": (lambda t, r: [r["wiki"], "--dict", r["wiki"]], "--dict needs --spm-model"),
    "valid fraction": (lambda t, r: [r["wiki"], "--valid-fraction", "1"], "--valid-fraction"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_and_create_nothing(case, raw, tmp_path):
    make_args, message = ERROR_CASES[case]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    before = sorted(tmp_path.iterdir())
    proc = run_script("prepare_corpus.py", "--destdir", tmp_path / "out", *make_args(tmp_path, raw))
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare_corpus: error: "), proc.stderr
    assert message in lines[0]
    assert sorted(tmp_path.iterdir()) == before


def test_nonempty_destdir_needs_force(raw, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep\n")
    proc = run_script("prepare_corpus.py", "--destdir", dest, raw["wiki"])
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip() == (f"prepare_corpus: error: --destdir {dest} exists and is "
                                   "not empty (use --force to replace it)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_prepare_corpus_help():
    out = check_ok(run_script("prepare_corpus.py", "--help")).stdout
    for option in ("--corpus", "--destdir", "--vocab-size", "--spm-model", "--valid-fraction",
                   "--seed", "--workers", "--force"):
        assert option in out
