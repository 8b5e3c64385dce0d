"""GLUE-format files to fairseq ``sentence_prediction`` data (the work of
``scripts/prepare_glue.py``).

Every sentence is encoded with the *pre-training* sentencepiece model and
binarized against the *pre-training* dictionary, so token ids match a model
pre-trained on data made by :func:`fairseq_meta.prep.corpus.prepare_corpus`; the
encoding is exactly that of pre-training text (:func:`~fairseq_meta.prep.corpus.normalize`,
then :func:`~fairseq_meta.prep.corpus.encode_documents`). The model and the dictionary
must come from the same run (:func:`~fairseq_meta.prep.corpus.check_spm_matches_dict`);
the share of tokens the dictionary maps to ``<unk>`` is reported for every split.

What a task's files look like is its record in :data:`fairseq_meta.prep.glue.GLUE_TASKS`.
The train split is optional: a task with dev data only is prepared for
evaluation (``meta.json``: ``"evaluation_only": true``).

Output, one directory per task (the layout of fairseq's
``examples/roberta/preprocess_GLUE_tasks.sh``)::

    DESTDIR/<TASK>/
      input0/  dict.txt train.{bin,idx} valid.{bin,idx}   first sentence
      input1/  (same)                                      sentence pairs only
      label/   dict.txt train.{bin,idx} valid.{bin,idx}   classification
      label/   train.label valid.label                     regression (STS-B)
      meta.json
"""
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

from . import corpus, glue
from ..errors import MetaConfigError


def _quiet(message):
    pass


@dataclass
class Rows:
    """The rows of one split as read: sentences per input column, labels."""
    path: str
    sentences: list  # one list of normalized sentences per input column
    labels: list = field(default_factory=list)  # label strings, or floats (regression)
    dropped: int = 0


# --------------------------------------------------------------------------- #
# Which tasks, which files
# --------------------------------------------------------------------------- #
def split_files(task, task_dir):
    """[(split, path)] of a task. The train split may be missing (evaluation
    data only); every other split must be there."""
    files = []
    for split in task.splits:
        paths = [os.path.join(task_dir, name) for name in split.files]
        found = next((p for p in paths if os.path.isfile(p)), None)
        if found is not None:
            files.append((split.name, found))
        elif split.name != "train":
            others = f" (nor {', '.join(split.files[1:])})" if len(paths) > 1 else ""
            raise MetaConfigError(f"{paths[0]}: file not found{others}")
    return files


def select_tasks(glue_dir, names=None, tasks=None):
    """([(GlueTask, [(split, path)])], [why each other task was skipped]): the
    tasks ``names`` (all must be usable), or every task in ``tasks`` (default
    :data:`~fairseq_meta.prep.glue.GLUE_TASKS`) with a usable directory in ``glue_dir``."""
    tasks = glue.GLUE_TASKS if tasks is None else tasks
    if not os.path.exists(glue_dir):
        raise MetaConfigError(f"--glue-dir {glue_dir} not found")
    if not os.path.isdir(glue_dir):
        raise MetaConfigError(f"--glue-dir {glue_dir} is not a directory")
    selected, skipped = [], []
    if names is None:
        found = set()
        for task in tasks.values():
            task_dir = glue.find_task_dir(glue_dir, task.name)
            if task_dir is None:
                continue
            found.add(task_dir.name)
            try:
                selected.append((task, split_files(task, task_dir)))
            except MetaConfigError as e:
                skipped.append(f"skipping {task.name}: {e}")
        unknown = sorted(e for e in os.listdir(glue_dir)
                         if os.path.isdir(os.path.join(glue_dir, e))
                         and e not in found and not e.startswith("."))
        if unknown:
            skipped.append(f"skipping {', '.join(unknown)}: not a known task (known: "
                f"{', '.join(tasks)}; describe others with --task-file)")
        if not selected:
            raise MetaConfigError(f"--glue-dir {glue_dir} has no usable task directory "
                                  f"(looked for {', '.join(tasks)})")
        return selected, skipped
    seen = set()
    for raw in names:
        try:
            task = glue.lookup(raw.strip(), tasks)
        except MetaConfigError:
            raise MetaConfigError(f"--tasks: unknown task {raw.strip()!r} (known: "
                                  f"{', '.join(tasks)}; describe others with --task-file)")
        if task.name in seen:
            raise MetaConfigError(f"--tasks: {task.name} given twice")
        seen.add(task.name)
        task_dir = glue.find_task_dir(glue_dir, task.name)
        if task_dir is None:
            raise MetaConfigError(f"task directory not found: {os.path.join(glue_dir, task.name)}")
        selected.append((task, split_files(task, task_dir)))
    return selected, skipped


# --------------------------------------------------------------------------- #
# Reading GLUE files
# --------------------------------------------------------------------------- #
def _lines(path):
    """(line number, text) of a file, split on '\\n' only; BOM and a final
    '\\r' removed; one-line error on bytes that are not UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MetaConfigError(f"{path}:{number}: not UTF-8 text ({e.reason} at "
                                      f"byte {e.start} of the line)")
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield number, line


def _add_row(task, where, texts, names, label, rows):
    """Check one row and add it to ``rows`` (or count it as dropped)."""
    sentences = [corpus.normalize(t) for t in texts]
    for sentence, name in zip(sentences, names):
        if not sentence:
            if task.drop_malformed:
                rows.dropped += 1
                return
            raise MetaConfigError(f"{where}: empty {name}")
    label = label.strip()
    if task.regression:
        try:
            value = float(label)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise MetaConfigError(f"{where}: score {label!r} is not a number")
        label = value
    elif label in task.drop_labels:
        rows.dropped += 1
        return
    elif label not in task.labels:
        raise MetaConfigError(f"{where}: label {label!r} is not one of {', '.join(task.labels)}")
    for column, sentence in zip(rows.sentences, sentences):
        column.append(sentence)
    rows.labels.append(label)


def read_tsv(task, path, max_rows=None):
    """A GLUE TSV file: one row per line split on tabs, no quoting."""
    rows = Rows(path, [[] for _ in task.inputs])
    lines = _lines(path)
    if task.header:
        first = next(lines, None)
        if first is None:
            raise MetaConfigError(f"{path}: empty file")
        header = first[1].split("\t")
        missing = [c for c in (*task.inputs, task.label) if c not in header]
        if missing:
            raise MetaConfigError(f"{path}:1: header has no column {missing[0]!r} (not the "
                                  f"GLUE {task.name} layout; header: {first[1][:80]!r})")
        input_cols = [header.index(c) for c in task.inputs]
        label_col = header.index(task.label)
        names = [f"{c!r} (column {i + 1})" for c, i in zip(task.inputs, input_cols)]
        n_columns = len(header)
    else:
        input_cols, label_col, n_columns = list(task.inputs), task.label, task.columns
        names = [f"sentence (column {i + 1})" for i in input_cols]
    for number, line in lines:
        if max_rows is not None and len(rows.labels) >= max_rows:
            break
        if not line.strip():
            raise MetaConfigError(f"{path}:{number}: empty line")
        fields = line.split("\t")
        if len(fields) != n_columns:
            if task.drop_malformed:
                rows.dropped += 1
                continue
            raise MetaConfigError(f"{path}:{number}: expected {n_columns} tab-separated "
                                  f"columns, found {len(fields)}")
        _add_row(task, f"{path}:{number}", [fields[i] for i in input_cols], names,
                 fields[label_col], rows)
    return rows


def read_jsonl(task, path, max_rows=None):
    """SNLI's original jsonl: one object per line with the task's fields."""
    rows = Rows(path, [[] for _ in task.inputs])
    for number, line in _lines(path):
        if max_rows is not None and len(rows.labels) >= max_rows:
            break
        where = f"{path}:{number}"
        if not line.strip():
            raise MetaConfigError(f"{where}: empty line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetaConfigError(f"{where}: not a JSON object ({e.msg})")
        if not isinstance(obj, dict):
            raise MetaConfigError(f"{where}: not a JSON object")
        for key in (*task.inputs, task.label):
            if not isinstance(obj.get(key), str):
                raise MetaConfigError(f"{where}: no string field {key!r}")
        _add_row(task, where, [obj[k] for k in task.inputs], [repr(k) for k in task.inputs],
                 obj[task.label], rows)
    return rows


def read_task(task, files, max_rows=None):
    """{split: Rows} of a task's files; every row checked."""
    splits = {}
    for name, path in files:
        reader = read_jsonl if path.endswith(".jsonl") else read_tsv
        rows = reader(task, path, max_rows)
        if not rows.labels:
            raise MetaConfigError(f"{path}: no data rows")
        splits[name] = rows
    return splits


# --------------------------------------------------------------------------- #
# Writing sentence_prediction data
# --------------------------------------------------------------------------- #
def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(f"{line}\n")


def stage_task(task, splits, stage, sp, vocabulary, options):
    """Write the text of one task into ``stage``; returns its fairseq-preprocess
    jobs and meta.json."""
    work = os.path.join(stage, "work")
    os.mkdir(work)
    names = list(splits)  # [train,] valid[, valid1]: the order fairseq names them
    counts = {}
    for name, rows in splits.items():
        counts[name] = corpus.Encoded()
        for i, sentences in enumerate(rows.sentences):
            # One "document" of all rows: one line per row, no blank lines.
            counts[name].update(corpus.encode_documents(
                sp, [sentences], os.path.join(work, f"{name}.input{i}"), options["workers"]))

    def prefixes(suffix):
        train = ["--trainpref", os.path.join(work, f"train.{suffix}")] if "train" in splits else []
        return train + ["--validpref", ",".join(os.path.join(work, f"{n}.{suffix}")
                                                for n in names if n != "train")]

    jobs = [["--srcdict", options["dict"], "--destdir", os.path.join(stage, f"input{i}"),
             *prefixes(f"input{i}")] for i in range(len(task.inputs))]
    label_dir = os.path.join(stage, "label")
    meta = {
        "task": task.name,
        "regression": task.regression,
        "num_classes": task.num_classes,
        "labels": [] if task.regression else list(task.labels),
        "inputs": len(task.inputs),
        "evaluation_only": "train" not in splits,
        "rows": {n: len(s.labels) for n, s in splits.items()},
    }
    if task.regression:
        os.mkdir(label_dir)
        for name, rows in splits.items():
            _write_lines(os.path.join(label_dir, f"{name}.label"),
                         (repr(v * options["regression_scale"]) for v in rows.labels))
        meta["regression_scale"] = options["regression_scale"]
    else:
        label_counts = {n: {label: s.labels.count(label) for label in task.labels}
                        for n, s in splits.items()}
        meta["label_counts"] = label_counts
        # The label dictionary in the task's fixed label order (class id i =
        # labels[i]), with the counts of the first split (train, if there is one).
        label_dict = os.path.join(work, "label.dict.txt")
        _write_lines(label_dict, (f"{label} {label_counts[names[0]][label]}"
                                  for label in task.labels))
        for name, rows in splits.items():
            _write_lines(os.path.join(work, f"{name}.label"), rows.labels)
        jobs.append(["--srcdict", label_dict, "--destdir", label_dir, *prefixes("label")])
    meta.update({
        "tokens": {n: c.tokens for n, c in counts.items()},
        "unk_rate": corpus.unk_rates(counts, vocabulary),
        "dropped": {n: s.dropped for n, s in splits.items()},
        "sources": {n: os.path.abspath(s.path) for n, s in splits.items()},
        "max_rows": options["max_rows"],
        # the file the text was encoded with: spm.model, or an imported tokenizer.json
        "spm_model": os.path.abspath(options["spm_model"]),
        "tokenizer_from": options.get("tokenizer_from"),
        "dict": os.path.abspath(options["dict"]),
        "task_record": task.to_dict(),
    })
    return jobs, meta


def finish_task(stage, meta, dict_path):
    """After fairseq-preprocess: exact dictionaries, meta.json, no work files."""
    work = os.path.join(stage, "work")
    for i in range(meta["inputs"]):
        # fairseq re-saves the --srcdict it loads; keep the original bytes.
        shutil.copyfile(dict_path, os.path.join(stage, f"input{i}", "dict.txt"))
    if not meta["regression"]:
        shutil.copyfile(os.path.join(work, "label.dict.txt"),
                        os.path.join(stage, "label", "dict.txt"))
    shutil.rmtree(work)
    with open(os.path.join(stage, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")


def check_model_and_dict(spm_model, dict_path):
    """(loaded model, dictionary symbols) of a matching pair; one-line error otherwise."""
    for option, path in (("--spm-model", spm_model), ("--dict", dict_path)):
        if not os.path.isfile(path):
            raise MetaConfigError(f"{option} {path} not found")
    sp = corpus.load_spm(spm_model)
    symbols = corpus.check_dictionary(dict_path)
    corpus.check_spm_matches_dict(sp, spm_model, symbols, dict_path)
    return sp, symbols


def prepare_glue(tasks, destdir, *, spm_model=None, dict_path=None, max_rows=None,
                 regression_scale=1.0, workers=1, force=False, skipped=(), tokenizer_from=None,
                 log=_quiet):
    """Prepare ``tasks`` ([(GlueTask, [(split, path)])], from :func:`select_tasks`)
    into ``destdir/<TASK>``; returns their meta.json contents.

    Every input is read and checked before anything is written; each task is
    built in a hidden directory inside ``destdir`` and moved into place when all
    tasks are done, so a failed run leaves nothing behind. ``skipped`` (from
    :func:`select_tasks`) is logged once everything is checked.
    """
    for task, files in tasks:
        out = os.path.join(destdir, task.name)
        for _, path in files:
            if corpus.is_inside(path, out):
                raise MetaConfigError(f"input {path} is inside the output directory {out}")
        corpus.check_replaceable(out, force, what="")
    if os.path.exists(destdir) and not os.path.isdir(destdir):
        raise MetaConfigError(f"--destdir {destdir} exists and is not a directory")
    if tokenizer_from is not None:
        # an imported model's tokenizer and dict.txt (prep/imported_tokenizer.py)
        from .imported_tokenizer import ImportedTokenizer

        sp = ImportedTokenizer(tokenizer_from, dict_path)
        dict_path, spm_model = sp.dict_path, os.path.join(sp.model_dir, "tokenizer.json")
        symbols = sp.symbols
    else:
        sp, symbols = check_model_and_dict(spm_model, dict_path)
    vocabulary = set(symbols)
    t0 = time.time()

    data = []
    for message in skipped:
        log(message)
    for task, files in tasks:
        splits = read_task(task, files, max_rows)
        data.append((task, splits))
        dropped = sum(s.dropped for s in splits.values())
        log(f"{task.name}: " + ", ".join(f"{n} {len(s.labels)} rows" for n, s in splits.items())
            + (f" ({dropped} rows dropped)" if dropped else "")
            + ("" if "train" in splits else " (no train split: evaluation data only)"))

    options = {"dict": dict_path, "spm_model": spm_model, "max_rows": max_rows,
               "tokenizer_from": None if tokenizer_from is None else os.path.abspath(tokenizer_from),
               "regression_scale": regression_scale, "workers": workers}
    dest = os.path.abspath(destdir)
    created = not os.path.exists(dest)
    os.makedirs(dest, exist_ok=True)
    stages, staged = [], []
    try:
        jobs = []
        for task, splits in data:
            stage = corpus.make_stage(dest, task.name)
            stages.append(stage)
            task_jobs, meta = stage_task(task, splits, stage, sp, vocabulary, options)
            staged.append((task, stage, meta))
            jobs.extend(task_jobs)
            log(f"{task.name}: <unk> {corpus.format_rates(meta['unk_rate'])}")
        log(f"encoded {len(data)} task(s) with "
            f"{sp.describe() if tokenizer_from is not None else 'sentencepiece'}; binarizing with "
            f"fairseq-preprocess ({len(jobs)} runs)")
        corpus.run_preprocess(jobs, workers)
        for task, stage, meta in staged:
            finish_task(stage, meta, dict_path)
        for task, stage, meta in staged:
            corpus.move_into_place(stage, os.path.join(dest, task.name))
    except BaseException:
        for stage in stages:
            shutil.rmtree(stage, ignore_errors=True)
        if created and not os.listdir(dest):
            os.rmdir(dest)
        raise
    log(f"done in {time.time() - t0:.1f}s")
    return [meta for _, _, meta in staged]
