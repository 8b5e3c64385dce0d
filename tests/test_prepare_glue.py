"""Tests of scripts/prepare_glue.py: GLUE TSV -> fairseq sentence_prediction data.

A small pre-training sentencepiece model + dictionary is made first with
scripts/prepare_corpus.py (300 lines of WikiText-2); then one run prepares the
first 50 rows of the real RTE, MRPC, CoLA and STS-B files, plus tiny
synthetic MNLI (three splits), SNLI (jsonl) and QQP files for the layouts the
shared data lacks.  Everything runs as users run it (``python scripts/...``).
Also: a model and a dictionary of two runs are refused; a task with a dev split
only is prepared for evaluation; skipped directories are named; --task-file.
"""
import csv
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from conftest import check_ok, run_script  # noqa: E402
SHARED_DATA = REPO.parent / "shared" / "data"
GLUE = SHARED_DATA / "glue"
WIKI = SHARED_DATA / "wikitext-2" / "valid.txt"
REAL_TASKS = ["RTE", "MRPC", "CoLA", "STS-B"]
ROWS = 50

pytestmark = pytest.mark.skipif(
    not (GLUE.is_dir() and WIKI.is_file()),
    reason=f"shared data not found ({GLUE}, {WIKI})")

# task: (file name per split, has header, sentence columns, label column)
LAYOUT = {
    "RTE": ({"train": "train.tsv", "valid": "dev.tsv"}, True, [1, 2], 3),
    "MRPC": ({"train": "train.tsv", "valid": "dev.tsv"}, True, [3, 4], 0),
    "CoLA": ({"train": "train.tsv", "valid": "dev.tsv"}, False, [3], 1),
    "STS-B": ({"train": "train.tsv", "valid": "dev.tsv"}, True, [7, 8], 9),
}




def tsv_rows(path, header, n=ROWS):
    """The first n data rows, read independently of the script (csv, QUOTE_NONE)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:n + 1] if header else rows[:n]


def normalize(text):
    return " ".join(text.split())


# --------------------------------------------------------------------------- #
# Synthetic files for the tasks that are not in the shared data
# --------------------------------------------------------------------------- #
PAIRS = [
    ("The river flows through the old town .", "A river runs through a town ."),
    ("She played the piano at the concert .", "Nobody played music ."),
    ("The team won the game in the last minute .", "The team lost the game ."),
    ("He built a small house near the lake .", "The house is near water ."),
]
NLI = ["entailment", "contradiction", "neutral", "entailment"]


def write_synthetic_tasks(glue):
    mnli = glue / "MNLI"
    mnli.mkdir()
    train_head = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                  "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label").split()
    dev_head = train_head[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]

    def mnli_rows(head, n):  # label1[..label5] and gold_label after sentence2
        return ["\t".join(head)] + [
            "\t".join([str(i), "1", "2", "fiction", "(x)", "(y)", "(X x)", "(Y y)", s1, s2]
                      + [lab] * (len(head) - 10))
            for i, ((s1, s2), lab) in enumerate(zip(PAIRS[:n], NLI))]
    (mnli / "train.tsv").write_text("\n".join(mnli_rows(train_head, 4)) + "\n", encoding="utf-8")
    (mnli / "dev_matched.tsv").write_text("\n".join(mnli_rows(dev_head, 3)) + "\n", encoding="utf-8")
    (mnli / "dev_mismatched.tsv").write_text("\n".join(mnli_rows(dev_head, 2)) + "\n",
                                             encoding="utf-8")

    snli = glue / "SNLI"
    snli.mkdir()
    lines = [json.dumps({"gold_label": lab, "sentence1": s1, "sentence2": s2})
             for (s1, s2), lab in zip(PAIRS, ["neutral", "-", "contradiction", "entailment"])]
    (snli / "snli_1.0_train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (snli / "snli_1.0_dev.jsonl").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")

    qqp = glue / "QQP"
    qqp.mkdir()
    rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"] + [
        f"{i}\t{2 * i}\t{2 * i + 1}\t{s1}\t{s2}\t{i % 2}" for i, (s1, s2) in enumerate(PAIRS)]
    rows.insert(2, "7\t8\tonly one question ?\t1")  # wrong field count: dropped, as fairseq does
    (qqp / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (qqp / "dev.tsv").write_text("\n".join(rows[:3]) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- #
# Fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def pretrain(tmp_path_factory):
    """prepare_corpus.py output: spm.model + dict.txt of a small 'pre-training' corpus."""
    root = tmp_path_factory.mktemp("pretrain")
    with open(WIKI, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(300), f)]
    (root / "wiki.txt").write_text("".join(lines), encoding="utf-8")
    check_ok(run_script("prepare_corpus.py", "--destdir", root / "data", "--vocab-size", "1000",
                        root / "wiki.txt"))
    return root / "data"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, pretrain):
    root = tmp_path_factory.mktemp("glue")
    glue = root / "glue"
    glue.mkdir()
    for task in REAL_TASKS:  # the real files, by symlink (never copied)
        (glue / task).symlink_to(GLUE / task, target_is_directory=True)
    write_synthetic_tasks(glue)
    dest = root / "bin"
    # A stale RTE output (replaced by --force) and another task's output (kept).
    (dest / "RTE").mkdir(parents=True)
    (dest / "RTE" / "stale.txt").write_text("old\n")
    (dest / "SST-2").mkdir()
    (dest / "SST-2" / "keep.txt").write_text("keep\n")
    proc = check_ok(run_script(
        "prepare_glue.py", "--glue-dir", glue,
        "--tasks", ",".join(REAL_TASKS + ["mnli", "SNLI", "QQP"]),
        "--spm-model", pretrain / "spm.model", "--dict", pretrain / "dict.txt",
        "--destdir", dest, "--max-rows", ROWS, "--workers", "2", "--force"))
    return dest, proc


@pytest.fixture(scope="module")
def fairseq_data():
    """fairseq's Dictionary and indexed-dataset loader (imported once: slow)."""
    from fairseq.data import Dictionary, data_utils

    def load(directory, split):
        dictionary = Dictionary.load(str(directory / "dict.txt"))
        dataset = data_utils.load_indexed_dataset(str(directory / split), dictionary)
        assert dataset is not None, directory / split
        rows = [dataset[i].tolist() for i in range(len(dataset))]
        assert all(r[-1] == dictionary.eos() for r in rows)
        return dictionary, [r[:-1] for r in rows]
    return load


def meta(dest, task):
    return json.loads((dest / task / "meta.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #
def test_layout_and_meta(prepared, pretrain):
    dest, proc = prepared
    assert sorted(os.listdir(dest)) == sorted(REAL_TASKS + ["MNLI", "SNLI", "QQP", "SST-2"])
    assert (dest / "SST-2" / "keep.txt").read_text() == "keep\n"  # other tasks untouched
    assert not (dest / "RTE" / "stale.txt").exists()  # --force replaced the task directory
    binary = {f"{s}.{e}" for s in ("train", "valid") for e in ("bin", "idx")}
    expect = {
        "RTE": (2, ["entailment", "not_entailment"]), "MRPC": (2, ["0", "1"]),
        "CoLA": (1, ["0", "1"]), "STS-B": (2, None),
        "MNLI": (2, ["contradiction", "entailment", "neutral"]),
        "SNLI": (2, ["contradiction", "entailment", "neutral"]), "QQP": (2, ["0", "1"]),
    }
    for task, (inputs, labels) in expect.items():
        out = dest / task
        names = {"input0", "label", "meta.json"} | ({"input1"} if inputs == 2 else set())
        assert set(os.listdir(out)) == names, task
        splits = binary | ({"valid1.bin", "valid1.idx"} if task == "MNLI" else set())
        for i in range(inputs):
            assert splits | {"dict.txt"} <= set(os.listdir(out / f"input{i}")), task
            # The pre-training dictionary, byte for byte: token ids match the model.
            assert (out / f"input{i}" / "dict.txt").read_bytes() == \
                (pretrain / "dict.txt").read_bytes()
        m = meta(dest, task)
        assert m["task"] == task and m["inputs"] == inputs
        if labels is None:
            assert m["regression"] is True and m["num_classes"] == 1 and m["labels"] == []
            assert set(os.listdir(out / "label")) == {"train.label", "valid.label"}
        else:
            assert m["regression"] is False and m["num_classes"] == len(labels)
            assert m["labels"] == labels
            assert splits | {"dict.txt"} <= set(os.listdir(out / "label"))
            # label/dict.txt: the labels in class-id order, with the train counts.
            assert (out / "label" / "dict.txt").read_text(encoding="utf-8").splitlines() == [
                f"{lab} {m['label_counts']['train'][lab]}" for lab in labels]
        assert m["max_rows"] == ROWS
        assert m["spm_model"] == str((pretrain / "spm.model").resolve())
    for task in REAL_TASKS:
        assert meta(dest, task)["rows"] == {"train": ROWS, "valid": ROWS}
        assert f"{task}: train {ROWS} rows, valid {ROWS} rows" in proc.stdout
    assert not [p for p in os.listdir(dest) if p.startswith(".")]  # no staging leftovers


def test_rows_labels_and_text_match_the_tsv(prepared, pretrain, fairseq_data):
    import sentencepiece as spm

    dest, _ = prepared
    sp = spm.SentencePieceProcessor(model_file=str(pretrain / "spm.model"))
    for task, (files, header, text_cols, label_col) in LAYOUT.items():
        m = meta(dest, task)
        for split, name in files.items():
            unknown = [0, 0]  # pieces the dictionary lacks, all pieces (every input)
            rows = tsv_rows(GLUE / task / name, header)
            assert len(rows) == ROWS == m["rows"][split]
            for i, col in enumerate(text_cols):
                dictionary, encoded = fairseq_data(dest / task / f"input{i}", split)
                assert len(encoded) == ROWS, (task, split, i)
                for row, ids in zip(rows, encoded):
                    sentence = normalize(row[col])
                    # Exactly prepare_corpus's encoding (pieces outside the dict -> <unk>).
                    pieces = [p if dictionary.index(p) != dictionary.unk() else "<unk>"
                              for p in sp.encode(sentence, out_type=str)]
                    assert dictionary.string(ids).split() == pieces, (task, split, row)
                    unknown[0] += pieces.count("<unk>")
                    unknown[1] += len(pieces)
                # Row 0 decodes back to the TSV sentence.
                decoded = sp.decode_pieces(dictionary.string(encoded[0]).split())
                assert decoded == normalize(rows[0][col]), (task, split, i)
            assert m["tokens"][split] == unknown[1]
            assert m["unk_rate"][split] == pytest.approx(unknown[0] / unknown[1])
            gold = [row[label_col] for row in rows]
            if m["regression"]:
                lines = (dest / task / "label" / f"{split}.label").read_text().splitlines()
                assert len(lines) == ROWS
                assert [float(x) for x in lines] == [float(g) for g in gold]
            else:
                dictionary, encoded = fairseq_data(dest / task / "label", split)
                assert len(encoded) == ROWS
                assert all(len(ids) == 1 for ids in encoded)
                assert [dictionary[ids[0]] for ids in encoded] == gold
                assert sum(m["label_counts"][split].values()) == ROWS


def test_synthetic_layouts(prepared, fairseq_data):
    """MNLI's three splits (valid1 = dev_mismatched), SNLI jsonl, QQP's dropped rows."""
    dest, _ = prepared
    m = meta(dest, "MNLI")
    assert m["rows"] == {"train": 4, "valid": 3, "valid1": 2}
    assert m["sources"]["valid1"].endswith("dev_mismatched.tsv")
    dictionary, labels = fairseq_data(dest / "MNLI" / "label", "valid1")
    assert [dictionary[ids[0]] for ids in labels] == NLI[:2]
    _, input1 = fairseq_data(dest / "MNLI" / "input1", "valid1")
    assert len(input1) == 2

    m = meta(dest, "SNLI")
    assert m["rows"] == {"train": 3, "valid": 1} and m["dropped"] == {"train": 1, "valid": 1}
    assert m["label_counts"]["train"] == {"contradiction": 1, "entailment": 1, "neutral": 1}

    m = meta(dest, "QQP")
    assert m["rows"] == {"train": 4, "valid": 1} and m["dropped"] == {"train": 1, "valid": 1}


def test_fairseq_sentence_prediction_reads_it(prepared):
    """fairseq's own sentence_prediction task loads a classification and a
    regression task and sees the TSV labels."""
    from fairseq.tasks.sentence_prediction import (
        SentencePredictionConfig, SentencePredictionTask)

    dest, _ = prepared
    rte = tsv_rows(GLUE / "RTE" / "dev.tsv", True)
    stsb = tsv_rows(GLUE / "STS-B" / "dev.tsv", True)
    for task, regression in (("RTE", False), ("STS-B", True)):
        m = meta(dest, task)
        cfg = SentencePredictionConfig(
            data=str(dest / task), num_classes=m["num_classes"], regression_target=regression,
            init_token=0, separator_token=2, max_positions=512, seed=1)
        fs_task = SentencePredictionTask.setup_task(cfg)
        fs_task.load_dataset("valid")
        dataset = fs_task.datasets["valid"]
        assert len(dataset) == ROWS
        targets = [dataset[i]["target"] for i in range(ROWS)]
        if regression:
            assert [float(t[0]) for t in targets] == [float(r[9]) for r in stsb]
        else:
            assert [m["labels"][int(t)] for t in targets] == [r[3] for r in rte]


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
RTE_HEAD = "index\tsentence1\tsentence2\tlabel"
GOOD_RTE = [RTE_HEAD, "0\tA man walks .\tSomeone walks .\tentailment",
            "1\tIt rains .\tThe sun shines .\tnot_entailment"]
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"


def make_task(glue, task, train, dev=None):
    (glue / task).mkdir(parents=True, exist_ok=True)
    (glue / task / "train.tsv").write_text("\n".join(train) + "\n", encoding="utf-8")
    if dev is not None:
        (glue / task / "dev.tsv").write_text("\n".join(dev) + "\n", encoding="utf-8")


ERROR_CASES = {
    "wrong column count": ("RTE", lambda g: make_task(
        g, "RTE", GOOD_RTE + ["2\tonly two\tentailment"], GOOD_RTE),
        ["RTE/train.tsv:4:", "expected 4 tab-separated columns, found 3"]),
    "empty sentence": ("RTE", lambda g: make_task(
        g, "RTE", GOOD_RTE, GOOD_RTE[:2] + ["2\t  \tSomething .\tentailment"]),
        ["RTE/dev.tsv:3:", "empty 'sentence1'"]),
    "unknown label": ("RTE", lambda g: make_task(
        g, "RTE", GOOD_RTE[:2] + ["1\tIt rains .\tWet .\tmaybe"], GOOD_RTE),
        ["RTE/train.tsv:3:", "label 'maybe' is not one of entailment, not_entailment"]),
    "bad score": ("STS-B", lambda g: make_task(
        g, "STS-B", [STSB_HEAD, "0\tg\tf\t2012\t1\tn\tn\tA cat .\tA dog .\thigh"],
        [STSB_HEAD, "0\tg\tf\t2012\t1\tn\tn\tA cat .\tA dog .\t1.5"]),
        ["STS-B/train.tsv:2:", "score 'high' is not a number"]),
    "CoLA columns": ("CoLA", lambda g: make_task(
        g, "CoLA", ["gj04\t1\t\tA fine sentence .", "gj04\t1\tA short row ."],
        ["gj04\t0\t*\tBad sentence ."]),
        ["CoLA/train.tsv:2:", "expected 4 tab-separated columns, found 3"]),
    "missing dev": ("RTE", lambda g: make_task(g, "RTE", GOOD_RTE),
                    ["RTE/dev.tsv: file not found"]),
    "MNLI without dev_matched": ("MNLI", lambda g: make_task(g, "MNLI", GOOD_RTE, GOOD_RTE),
                                 ["MNLI/dev_matched.tsv: file not found"]),
    "missing task dir": ("MRPC", lambda g: make_task(g, "RTE", GOOD_RTE, GOOD_RTE),
                         ["task directory not found", "MRPC"]),
    "unknown task": ("RTE,FOO", lambda g: make_task(g, "RTE", GOOD_RTE, GOOD_RTE),
                     ["unknown task 'FOO'"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_and_write_nothing(case, tmp_path, pretrain):
    tasks, make, expected = ERROR_CASES[case]
    glue = tmp_path / "glue"
    glue.mkdir()
    make(glue)
    dest = tmp_path / "out"
    proc = run_script("prepare_glue.py", "--glue-dir", glue, "--tasks", tasks,
                      "--spm-model", pretrain / "spm.model", "--dict", pretrain / "dict.txt",
                      "--destdir", dest)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare_glue: error: "), proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert not dest.exists()
    assert proc.stdout == ""


def test_argument_errors(tmp_path, pretrain):
    glue = tmp_path / "glue"
    make_task(glue, "RTE", GOOD_RTE, GOOD_RTE)
    good = {"--glue-dir": glue, "--tasks": "RTE", "--spm-model": pretrain / "spm.model",
            "--dict": pretrain / "dict.txt", "--destdir": tmp_path / "out"}
    existing = tmp_path / "existing"
    (existing / "RTE").mkdir(parents=True)
    (existing / "RTE" / "x").write_text("x")
    not_a_dict = tmp_path / "bad-dict.txt"
    not_a_dict.write_text("no count here\n")
    cases = [
        ({"--glue-dir": tmp_path / "nope"}, "--glue-dir", "not found"),
        ({"--spm-model": tmp_path / "none.model"}, "--spm-model", "not found"),
        ({"--dict": tmp_path / "none.txt"}, "--dict", "not found"),
        ({"--dict": not_a_dict}, "not a fairseq dictionary", "line 1"),
        ({"--spm-model": not_a_dict}, "cannot load sentencepiece model", "bad-dict.txt"),
        ({"--destdir": existing}, "exists and is not empty", "--force"),
    ]
    for change, *expected in cases:
        args = [str(x) for k, v in {**good, **change}.items() for x in (k, v)]
        proc = run_script("prepare_glue.py", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, (change, proc.stderr)
        assert lines[0].startswith("prepare_glue: error: ")
        for text in expected:
            assert text in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert os.listdir(existing / "RTE") == ["x"]


# --------------------------------------------------------------------------- #
# A model and a dictionary that do not belong together
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def other_pretrain(tmp_path_factory):
    """Another prepare_corpus run, on other text: its own spm.model and dict.txt."""
    root = tmp_path_factory.mktemp("other")
    with open(WIKI, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(900), f)][600:]
    (root / "wiki.txt").write_text("".join(lines), encoding="utf-8")
    check_ok(run_script("prepare_corpus.py", "--destdir", root / "data", "--vocab-size", "1000",
                        root / "wiki.txt"))
    return root / "data"


@pytest.mark.parametrize("mixed", ["spm of one run, dict of another", "the other way round"])
def test_model_and_dictionary_of_different_runs_are_refused(mixed, tmp_path, pretrain,
                                                            other_pretrain):
    glue = tmp_path / "glue"
    make_task(glue, "RTE", GOOD_RTE, GOOD_RTE)
    spm_model, dictionary = pretrain / "spm.model", other_pretrain / "dict.txt"
    if mixed == "the other way round":
        spm_model, dictionary = other_pretrain / "spm.model", pretrain / "dict.txt"
    proc = run_script("prepare_glue.py", "--glue-dir", glue, "--spm-model", spm_model,
                      "--dict", dictionary, "--destdir", tmp_path / "out")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"prepare_glue: error: --dict {dictionary} does not belong to "
                               f"--spm-model {spm_model}: ")
    assert proc.stdout == "" and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- #
# Evaluation-only tasks, skipped directories, tasks outside the table
# --------------------------------------------------------------------------- #
MYNLI = {"name": "MyNLI", "inputs": ["premise", "hypothesis"], "label": "verdict",
         "labels": ["yes", "no"], "metrics": ["accuracy"], "config": "rte"}


def test_dev_only_task_unknown_directories_and_a_task_file(tmp_path, pretrain, fairseq_data):
    glue = tmp_path / "glue"
    make_task(glue, "RTE", GOOD_RTE, GOOD_RTE)
    qnli = ["index\tquestion\tsentence\tlabel",
            "0\tWhere is it ?\tIt is here .\tentailment",
            "1\tWho ?\tRain falls .\tnot_entailment",
            "2\tWhen ?\tNow .\tentailment"]
    (glue / "QNLI").mkdir()
    (glue / "QNLI" / "dev.tsv").write_text("\n".join(qnli) + "\n", encoding="utf-8")
    make_task(glue, "MRPC", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"])  # no dev.tsv
    (glue / "Foo").mkdir()
    mynli = [row.replace("sentence1\tsentence2\tlabel", "premise\thypothesis\tverdict")
             .replace("not_entailment", "no").replace("entailment", "yes") for row in GOOD_RTE]
    make_task(glue, "MyNLI", mynli, mynli)
    task_file = tmp_path / "mynli.json"
    task_file.write_text(json.dumps(MYNLI))

    dest = tmp_path / "out"
    proc = check_ok(run_script("prepare_glue.py", "--glue-dir", glue, "--task-file", task_file,
                               "--spm-model", pretrain / "spm.model",
                               "--dict", pretrain / "dict.txt", "--destdir", dest))
    assert f"skipping MRPC: {glue / 'MRPC' / 'dev.tsv'}: file not found" in proc.stdout
    assert "skipping Foo: not a known task" in proc.stdout
    assert "QNLI: valid 3 rows (no train split: evaluation data only)" in proc.stdout
    assert sorted(os.listdir(dest)) == ["MyNLI", "QNLI", "RTE"]

    m = meta(dest, "QNLI")
    assert m["evaluation_only"] is True and m["rows"] == {"valid": 3}
    assert set(m["unk_rate"]) == {"valid"}
    for sub in ("input0", "input1", "label"):
        assert not [f for f in os.listdir(dest / "QNLI" / sub) if f.startswith("train.")]
    dictionary, labels = fairseq_data(dest / "QNLI" / "label", "valid")
    assert [dictionary[ids[0]] for ids in labels] == ["entailment", "not_entailment", "entailment"]
    # Class ids in the table's order, with the counts of the only split.
    assert (dest / "QNLI" / "label" / "dict.txt").read_text() == \
        "entailment 2\nnot_entailment 1\n"
    assert meta(dest, "RTE")["evaluation_only"] is False

    m = meta(dest, "MyNLI")
    assert m["labels"] == ["yes", "no"] and m["rows"] == {"train": 2, "valid": 2}
    assert m["task_record"]["config"] == "rte" and m["task_record"]["metrics"] == ["accuracy"]
    dictionary, labels = fairseq_data(dest / "MyNLI" / "label", "train")
    assert [dictionary[ids[0]] for ids in labels] == ["yes", "no"]


def test_bad_task_file_is_one_line(tmp_path, pretrain):
    glue = tmp_path / "glue"
    make_task(glue, "RTE", GOOD_RTE, GOOD_RTE)
    task_file = tmp_path / "bad.json"
    task_file.write_text(json.dumps({**MYNLI, "metrics": ["auc"]}))
    proc = run_script("prepare_glue.py", "--glue-dir", glue, "--task-file", task_file,
                      "--spm-model", pretrain / "spm.model", "--dict", pretrain / "dict.txt",
                      "--destdir", tmp_path / "out")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"prepare_glue: error: task file {task_file}: unknown metric "
                                   "'auc' (known: accuracy, f1, mcc, pearson, spearman)")
