#!/usr/bin/env python3
"""Prepare GLUE-format data for fairseq's ``sentence_prediction`` task.

Every sentence is encoded with the *pre-training* sentencepiece model and
binarized against the *pre-training* dictionary, so token ids match a model
pre-trained on data made by ``scripts/prepare_corpus.py``.  The encoding is
exactly prepare_corpus's: whitespace collapsed to single spaces, then
sentencepiece pieces joined by spaces (its ``encode_documents``).

Input: the original GLUE layout, ``GLUE_DIR/<TASK>/{train,dev}.tsv`` (MNLI:
``train.tsv dev_matched.tsv dev_mismatched.tsv``; SNLI: the GLUE tsv files or
``snli_1.0_{train,dev}.jsonl``).  TSV files are read as UTF-8 (a BOM is
dropped) with quoting disabled: a row is one line split on tabs.

Output, one directory per task (the layout of fairseq's
``examples/roberta/preprocess_GLUE_tasks.sh``)::

    DESTDIR/<TASK>/
      input0/  dict.txt train.{bin,idx} valid.{bin,idx}   first sentence
      input1/  (same)                                      sentence pairs only
      label/   dict.txt train.{bin,idx} valid.{bin,idx}   classification
      label/   train.label valid.label                     regression (STS-B)
      meta.json

``input*/dict.txt`` is a byte-identical copy of ``--dict``.  ``label/dict.txt``
lists the task's labels in a fixed order: class id i is ``meta.json``'s
``labels[i]``.  dev becomes ``valid`` (MNLI: dev_matched -> valid,
dev_mismatched -> valid1).

Every input is read and checked before anything is written; each task is built
in a hidden directory inside DESTDIR and moved into place when all tasks are
done, so a failed run leaves nothing behind.

Example::

    python scripts/prepare_glue.py --glue-dir ../shared/data/glue --tasks RTE,MRPC \\
        --spm-model data/wiki/spm.model --dict data/wiki/dict.txt --destdir data-bin/glue
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_corpus  # noqa: E402
from prepare_corpus import (  # noqa: E402
    _is_inside,
    check_dictionary,
    encode_documents,
    load_spm,
)

PROG = "prepare_glue"
# prepare_corpus's die()/log() (also used by the helpers imported above) name
# the program through this global.
prepare_corpus.PROG = PROG
die = prepare_corpus.die
log = prepare_corpus.log

TRAIN_DEV = (("train", ("train.tsv",)), ("valid", ("dev.tsv",)))


@dataclass(frozen=True)
class TaskSpec:
    """How to read one GLUE task.

    ``inputs``/``label`` name header columns, or are 0-based column numbers for
    a file without header (``header=False``, exactly ``columns`` columns).
    ``labels`` is the label set in class-id order; ``None`` means regression
    (a float score).
    """
    name: str
    inputs: tuple
    label: object
    labels: tuple = None
    header: bool = True
    columns: int = None
    # (split, candidate file names): the first that exists is read.
    splits: tuple = TRAIN_DEV
    # Rows with the wrong number of columns or an empty sentence are dropped
    # (and counted) instead of being an error.
    drop_malformed: bool = False
    # Rows with one of these labels are dropped (and counted).
    drop_labels: tuple = ()

    @property
    def regression(self):
        return self.labels is None


NLI3 = ("contradiction", "entailment", "neutral")
TASKS = {spec.name: spec for spec in [
    TaskSpec("CoLA", inputs=(3,), label=1, labels=("0", "1"), header=False, columns=4),
    TaskSpec("SST-2", inputs=("sentence",), label="label", labels=("0", "1")),
    TaskSpec("MRPC", inputs=("#1 String", "#2 String"), label="Quality", labels=("0", "1")),
    TaskSpec("STS-B", inputs=("sentence1", "sentence2"), label="score"),
    # fairseq's preprocess_GLUE_tasks.sh drops QQP rows with the wrong number
    # of fields; so do we (counted in meta.json "dropped").
    TaskSpec("QQP", inputs=("question1", "question2"), label="is_duplicate",
             labels=("0", "1"), drop_malformed=True),
    TaskSpec("MNLI", inputs=("sentence1", "sentence2"), label="gold_label", labels=NLI3,
             splits=(("train", ("train.tsv",)), ("valid", ("dev_matched.tsv",)),
                     ("valid1", ("dev_mismatched.tsv",)))),
    TaskSpec("QNLI", inputs=("question", "sentence"), label="label",
             labels=("entailment", "not_entailment")),
    TaskSpec("RTE", inputs=("sentence1", "sentence2"), label="label",
             labels=("entailment", "not_entailment")),
    TaskSpec("WNLI", inputs=("sentence1", "sentence2"), label="label", labels=("0", "1")),
    # SNLI pairs without a majority label ("-") are dropped, as is usual.
    TaskSpec("SNLI", inputs=("sentence1", "sentence2"), label="gold_label", labels=NLI3,
             drop_labels=("-",),
             splits=(("train", ("train.tsv", "snli_1.0_train.jsonl", "train.jsonl")),
                     ("valid", ("dev.tsv", "snli_1.0_dev.jsonl", "dev.jsonl")))),
]}


def task_key(name):
    """Case-, '-' and '_'-insensitive key of a task name (sts-b = STSB = STS-B)."""
    return name.upper().replace("-", "").replace("_", "")


TASK_KEYS = {task_key(name): name for name in TASKS}


# --------------------------------------------------------------------------- #
# Arguments
# --------------------------------------------------------------------------- #
def build_argparser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Encode GLUE-format data with the pre-training sentencepiece "
        "model and binarize it against the pre-training dictionary for fairseq's "
        "sentence_prediction task: DESTDIR/<TASK>/{input0,input1,label}/ and "
        "DESTDIR/<TASK>/meta.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--glue-dir", required=True, metavar="DIR",
                        help="directory with one subdirectory per task in the "
                        "original GLUE layout (e.g. ../shared/data/glue)")
    parser.add_argument("--tasks", default=None, metavar="T1,T2,...",
                        help="comma-separated tasks (default: every known task "
                        f"with a directory in --glue-dir); known: {', '.join(TASKS)}")
    parser.add_argument("--spm-model", required=True, metavar="PATH",
                        help="sentencepiece model of the pre-training data "
                        "(prepare_corpus.py's DESTDIR/spm.model)")
    parser.add_argument("--dict", required=True, metavar="PATH",
                        help="fairseq dictionary of the pre-training data "
                        "(prepare_corpus.py's DESTDIR/dict.txt)")
    parser.add_argument("--destdir", required=True, metavar="DIR",
                        help="output directory; DESTDIR/<TASK> must not exist or "
                        "be empty, unless --force (other tasks in DESTDIR are kept)")
    parser.add_argument("--max-rows", type=int, default=None, metavar="N",
                        help="read only the first N data rows of every split "
                        "(tests, quick runs)")
    parser.add_argument("--regression-scale", type=float, default=1.0, metavar="F",
                        help="multiply regression targets (STS-B scores, 0-5) by F; "
                        "0.2 gives the 0-1 targets of fairseq's RoBERTa recipe")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="threads for sentencepiece and processes for "
                        "fairseq-preprocess")
    parser.add_argument("--force", action="store_true",
                        help="replace existing non-empty DESTDIR/<TASK> directories")
    return parser


def find_task_dir(glue_dir, name):
    """The directory of task ``name`` in ``glue_dir`` (name matched like task_key)."""
    exact = os.path.join(glue_dir, name)
    if os.path.isdir(exact):
        return exact
    for entry in sorted(os.listdir(glue_dir)):
        path = os.path.join(glue_dir, entry)
        if task_key(entry) == task_key(name) and os.path.isdir(path):
            return path
    return None


def select_tasks(args):
    """[(TaskSpec, task directory)] for --tasks, or every task present."""
    glue_dir = args.glue_dir
    if not os.path.exists(glue_dir):
        die(f"--glue-dir {glue_dir} not found")
    if not os.path.isdir(glue_dir):
        die(f"--glue-dir {glue_dir} is not a directory")
    if args.tasks is None:
        selected = [(TASKS[n], d) for n in TASKS
                    if (d := find_task_dir(glue_dir, n)) is not None]
        if not selected:
            die(f"--glue-dir {glue_dir} has no GLUE task directory "
                f"(looked for {', '.join(TASKS)})")
        return selected
    selected, seen = [], set()
    for raw in args.tasks.split(","):
        name = raw.strip()
        if task_key(name) not in TASK_KEYS:
            die(f"--tasks: unknown task {name!r} (known: {', '.join(TASKS)})")
        spec = TASKS[TASK_KEYS[task_key(name)]]
        if spec.name in seen:
            die(f"--tasks: {spec.name} given twice")
        seen.add(spec.name)
        task_dir = find_task_dir(glue_dir, spec.name)
        if task_dir is None:
            die(f"task directory not found: {os.path.join(glue_dir, spec.name)}")
        selected.append((spec, task_dir))
    return selected


def split_files(spec, task_dir):
    """[(split, path)] of a task; exits if a file is missing."""
    files = []
    for split, candidates in spec.splits:
        paths = [os.path.join(task_dir, c) for c in candidates]
        found = next((p for p in paths if os.path.isfile(p)), None)
        if found is None:
            die(f"{paths[0]}: file not found" + (
                f" (nor {', '.join(os.path.basename(p) for p in paths[1:])})"
                if len(paths) > 1 else ""))
        files.append((split, found))
    return files


def validate_args(args):
    """Check everything but the rows; exit with a one-line error, before any output.

    Returns [(TaskSpec, [(split, path)])].
    """
    if args.max_rows is not None and args.max_rows < 1:
        die(f"--max-rows must be >= 1 (got {args.max_rows})")
    if args.workers < 1:
        die(f"--workers must be >= 1 (got {args.workers})")
    if not (math.isfinite(args.regression_scale) and args.regression_scale > 0):
        die(f"--regression-scale must be a positive number (got {args.regression_scale})")
    tasks = [(spec, split_files(spec, task_dir)) for spec, task_dir in select_tasks(args)]
    for option, path in (("--spm-model", args.spm_model), ("--dict", args.dict)):
        if not os.path.isfile(path):
            die(f"{option} {path} not found")
    if os.path.getsize(args.dict) == 0:
        die(f"--dict {args.dict} is empty")

    dest = args.destdir
    if os.path.exists(dest) and not os.path.isdir(dest):
        die(f"--destdir {dest} exists and is not a directory")
    for spec, files in tasks:
        out = os.path.join(dest, spec.name)
        for _, path in files:
            if _is_inside(path, out):
                die(f"input {path} is inside the output directory {out}")
        if not os.path.exists(out):
            continue
        if not os.path.isdir(out):
            die(f"{out} exists and is not a directory")
        if os.listdir(out):
            if not args.force:
                die(f"{out} exists and is not empty (use --force to replace it)")
            if _is_inside(os.getcwd(), out):
                die(f"--force refuses to replace {out} (it contains the current directory)")
    load_spm(args.spm_model)  # one-line error if it does not load
    check_dictionary(args.dict)
    return tasks


# --------------------------------------------------------------------------- #
# Reading GLUE files
# --------------------------------------------------------------------------- #
@dataclass
class Split:
    path: str
    sentences: list  # one list of normalized sentences per input column
    labels: list     # label strings, or floats for regression
    dropped: int = 0


def normalize(text):
    """prepare_corpus's line normalization: whitespace collapsed to single spaces."""
    return " ".join(text.split())


def _lines(path):
    """(line number, text) of a file, split on '\\n' only; BOM and a final
    '\\r' removed; exits on bytes that are not UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                die(f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start} of the line)")
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield number, line


def _check_row(spec, path, number, texts, names, label, split):
    """Validate one row and add it to ``split``; returns False if it was dropped."""
    where = f"{path}:{number}"
    sentences = [normalize(t) for t in texts]
    for sentence, name in zip(sentences, names):
        if not sentence:
            if spec.drop_malformed:
                split.dropped += 1
                return False
            die(f"{where}: empty {name}")
    label = label.strip()
    if spec.regression:
        try:
            value = float(label)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            die(f"{where}: score {label!r} is not a number")
        label = value
    elif label in spec.drop_labels:
        split.dropped += 1
        return False
    elif label not in spec.labels:
        die(f"{where}: label {label!r} is not one of {', '.join(spec.labels)}")
    for column, sentence in zip(split.sentences, sentences):
        column.append(sentence)
    split.labels.append(label)
    return True


def read_tsv(spec, path, max_rows):
    split = Split(path, [[] for _ in spec.inputs], [])
    lines = _lines(path)
    if spec.header:
        first = next(lines, None)
        if first is None:
            die(f"{path}: empty file")
        header = first[1].split("\t")
        wanted = list(spec.inputs) + [spec.label]
        missing = [c for c in wanted if c not in header]
        if missing:
            die(f"{path}:1: header has no column {missing[0]!r} (not the GLUE "
                f"{spec.name} layout; header: {first[1][:80]!r})")
        input_cols = [header.index(c) for c in spec.inputs]
        label_col = header.index(spec.label)
        names = [f"{c!r} (column {i + 1})" for c, i in zip(spec.inputs, input_cols)]
        n_columns = len(header)
    else:
        input_cols, label_col, n_columns = list(spec.inputs), spec.label, spec.columns
        names = [f"sentence (column {i + 1})" for i in input_cols]
    for number, line in lines:
        if max_rows is not None and len(split.labels) >= max_rows:
            break
        if not line.strip():
            die(f"{path}:{number}: empty line")
        fields = line.split("\t")
        if len(fields) != n_columns:
            if spec.drop_malformed:
                split.dropped += 1
                continue
            die(f"{path}:{number}: expected {n_columns} tab-separated columns, "
                f"found {len(fields)}")
        _check_row(spec, path, number, [fields[i] for i in input_cols], names,
                   fields[label_col], split)
    return split


def read_jsonl(spec, path, max_rows):
    """SNLI's original jsonl: one object per line with sentence1/sentence2/gold_label."""
    split = Split(path, [[] for _ in spec.inputs], [])
    for number, line in _lines(path):
        if max_rows is not None and len(split.labels) >= max_rows:
            break
        if not line.strip():
            die(f"{path}:{number}: empty line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            die(f"{path}:{number}: not a JSON object ({e.msg})")
        if not isinstance(obj, dict):
            die(f"{path}:{number}: not a JSON object")
        for key in list(spec.inputs) + [spec.label]:
            if not isinstance(obj.get(key), str):
                die(f"{path}:{number}: no string field {key!r}")
        _check_row(spec, path, number, [obj[k] for k in spec.inputs],
                   [repr(k) for k in spec.inputs], obj[spec.label], split)
    return split


def read_task(spec, files, max_rows):
    splits = {}
    for name, path in files:
        reader = read_jsonl if path.endswith(".jsonl") else read_tsv
        split = reader(spec, path, max_rows)
        if not split.labels:
            die(f"{path}: no data rows")
        splits[name] = split
    return splits


# --------------------------------------------------------------------------- #
# Binarizing
# --------------------------------------------------------------------------- #
# fairseq-preprocess (fairseq_cli.preprocess, parsed exactly as the command
# line) for several argument lists in one process: importing fairseq takes
# seconds, so one process per task and column would dominate the run time.
PREPROCESS_RUNNER = r"""
import json, logging, sys
from fairseq import options
from fairseq_cli import preprocess
for job in json.loads(sys.argv[1]):
    preprocess.main(options.get_preprocessing_parser().parse_args(job))
    for handler in list(preprocess.logger.handlers):
        if isinstance(handler, logging.FileHandler):  # main() adds one per call
            preprocess.logger.removeHandler(handler)
            handler.close()
"""


def run_preprocess(jobs, workers):
    """Run ``fairseq-preprocess --only-source`` once per argument list in ``jobs``,
    spread over up to ``workers`` processes; one-line error on a failure."""
    n_procs = max(1, min(workers, len(jobs)))
    each = str(max(1, workers // n_procs))
    running = []
    for i in range(n_procs):
        share = [["--only-source", "--workers", each, *job] for job in jobs[i::n_procs]]
        cmd = [sys.executable, "-c", PREPROCESS_RUNNER, json.dumps(share)]
        running.append((share, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failed = []
    for share, proc in running:
        output = proc.communicate()[0]
        if proc.returncode != 0:
            failed.append((share, proc.returncode, output))
    if failed:
        share, code, output = failed[0]
        sys.stderr.write(output[-4000:])
        die(f"fairseq-preprocess failed (exit {code}) on one of: "
            + "; ".join(" ".join(job) for job in share))


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(f"{line}\n")


def stage_task(spec, splits, stage, sp, args):
    """Write the text of one task into ``stage`` and return its
    fairseq-preprocess jobs and meta.json."""
    work = os.path.join(stage, "work")
    os.mkdir(work)
    names = list(splits)  # train, valid[, valid1]: the order fairseq names them
    n_inputs = len(spec.inputs)
    tokens = {}
    for name, split in splits.items():
        tokens[name] = 0
        for i, sentences in enumerate(split.sentences):
            # One "document" of all rows: one line per row, no blank lines.
            tokens[name] += encode_documents(
                sp, [sentences], os.path.join(work, f"{name}.input{i}"), args.workers)

    def prefixes(suffix):
        return ["--trainpref", os.path.join(work, f"train.{suffix}"),
                "--validpref", ",".join(os.path.join(work, f"{n}.{suffix}")
                                        for n in names[1:])]

    jobs = [["--srcdict", args.dict, "--destdir", os.path.join(stage, f"input{i}"),
             *prefixes(f"input{i}")] for i in range(n_inputs)]
    label_dir = os.path.join(stage, "label")
    meta = {
        "task": spec.name,
        "regression": spec.regression,
        "num_classes": 1 if spec.regression else len(spec.labels),
        "labels": [] if spec.regression else list(spec.labels),
        "inputs": n_inputs,
        "rows": {n: len(s.labels) for n, s in splits.items()},
    }
    if spec.regression:
        os.mkdir(label_dir)
        for name, split in splits.items():
            write_lines(os.path.join(label_dir, f"{name}.label"),
                        (repr(v * args.regression_scale) for v in split.labels))
        meta["regression_scale"] = args.regression_scale
    else:
        counts = {n: Counter(s.labels) for n, s in splits.items()}
        meta["label_counts"] = {n: {label: c[label] for label in spec.labels}
                                for n, c in counts.items()}
        # The label dictionary in the task's fixed label order (class id i =
        # labels[i]), with the training counts.
        label_dict = os.path.join(work, "label.dict.txt")
        write_lines(label_dict, (f"{label} {counts['train'][label]}"
                                 for label in spec.labels))
        for name, split in splits.items():
            write_lines(os.path.join(work, f"{name}.label"), split.labels)
        jobs.append(["--srcdict", label_dict, "--destdir", label_dir, *prefixes("label")])
    meta.update({
        "tokens": tokens,
        "dropped": {n: s.dropped for n, s in splits.items()},
        "sources": {n: os.path.abspath(s.path) for n, s in splits.items()},
        "max_rows": args.max_rows,
        "spm_model": os.path.abspath(args.spm_model),
        "dict": os.path.abspath(args.dict),
    })
    return jobs, meta


def finish_task(stage, meta, args):
    """After fairseq-preprocess: exact dictionaries, meta.json, no work files."""
    work = os.path.join(stage, "work")
    for i in range(meta["inputs"]):
        # fairseq re-saves the --srcdict it loads; keep the original bytes.
        shutil.copyfile(args.dict, os.path.join(stage, f"input{i}", "dict.txt"))
    if not meta["regression"]:
        shutil.copyfile(os.path.join(work, "label.dict.txt"),
                        os.path.join(stage, "label", "dict.txt"))
    shutil.rmtree(work)
    with open(os.path.join(stage, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def main(argv=None):
    args = build_argparser().parse_args(argv)
    tasks = validate_args(args)
    t0 = time.time()

    # Read and check every row of every task before writing anything.
    data = []
    for spec, files in tasks:
        splits = read_task(spec, files, args.max_rows)
        data.append((spec, splits))
        dropped = sum(s.dropped for s in splits.values())
        log(f"{spec.name}: " + ", ".join(f"{n} {len(s.labels)} rows"
                                         for n, s in splits.items())
            + (f" ({dropped} rows dropped)" if dropped else ""))

    sp = load_spm(args.spm_model)
    dest = os.path.abspath(args.destdir)
    created = not os.path.exists(dest)
    os.makedirs(dest, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    stages, staged = [], []  # staged: (spec, stage, meta)
    try:
        jobs = []
        for spec, splits in data:
            stage = tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=dest)
            stages.append(stage)
            os.chmod(stage, 0o777 & ~umask)  # mkdtemp creates it private (0700)
            task_jobs, meta = stage_task(spec, splits, stage, sp, args)
            staged.append((spec, stage, meta))
            jobs.extend(task_jobs)
        log(f"encoded {len(data)} task(s) with sentencepiece; binarizing with "
            f"fairseq-preprocess ({len(jobs)} runs)")
        run_preprocess(jobs, args.workers)
        for spec, stage, meta in staged:
            finish_task(stage, meta, args)
        # Move the finished tasks into place.
        for spec, stage, meta in staged:
            out = os.path.join(dest, spec.name)
            if os.path.isdir(out):
                shutil.rmtree(out) if os.listdir(out) else os.rmdir(out)
            os.rename(stage, out)
    except BaseException:
        for stage in stages:
            shutil.rmtree(stage, ignore_errors=True)
        if created and not os.listdir(dest):
            os.rmdir(dest)
        raise

    log(f"done in {time.time() - t0:.1f}s")
    for spec, stage, meta in staged:
        kind = ("regression" if meta["regression"]
                else f"{meta['num_classes']} classes: {', '.join(meta['labels'])}")
        rows = ", ".join(f"{n} {r} rows" for n, r in meta["rows"].items())
        print(f"{spec.name}: {rows} ({kind}) -> {os.path.join(args.destdir, spec.name)}")


if __name__ == "__main__":
    main()
