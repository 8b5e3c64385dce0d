"""What a GLUE task is, written down once.

Every GLUE fact the project uses lives in :data:`GLUE_TASKS`: how to read the
task's files (columns, header, splits), what its label is (class names in
class-id order, or a regression score), how it is scored (metrics, the GLUE
score), which fine-tuning config it uses and whether it is one sentence or a
pair. Preparing data (:mod:`fairseq_meta.prep.glue_data`) reads files with it,
fine-tuning (:mod:`fairseq_meta.run.finetune`) checks data and configs against it and
scores with it, and so does every report of GLUE scores (:func:`task_score`).

Adding a GLUE-format task is one :class:`GlueTask` entry here, or a JSON file
with the same fields given to ``prepare_glue.py --task-file`` (see
:func:`task_from_dict`); ``prepare_glue.py`` writes the record into the task's
``meta.json`` so fine-tuning finds it there too.

The metric functions themselves are in :mod:`fairseq_meta.prep.glue_metrics`
(numpy only); here a task names them.

The GLUE score of a task is the unweighted mean of its metrics (Wang et al.
2018): MRPC and QQP = mean(F1, accuracy), STS-B = mean(Pearson, Spearman),
CoLA = Matthews correlation, the others accuracy.
"""
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import glue_metrics
from ..data.labels import is_padding_symbol, real_labels  # noqa: F401 (part of this API)
from ..errors import MetaConfigError

__all__ = [
    "GlueTask", "Split", "GLUE_TASKS", "task_key", "lookup", "find_task_dir",
    "is_padding_symbol", "real_labels", "read_label_dict", "compute_metrics",
    "task_score", "task_from_dict", "load_task_file",
]


@dataclass(frozen=True)
class Split:
    """One split of a task: fairseq's name for it (``train``, ``valid``,
    ``valid1``), the file names to look for in the task directory (the first
    that exists is read) and the name it has in result tables."""
    name: str
    files: tuple
    title: str = None


TRAIN_DEV = (Split("train", ("train.tsv",)), Split("valid", ("dev.tsv",)))


@dataclass(frozen=True)
class GlueTask:
    """One GLUE-format task.

    ``inputs`` / ``label`` name header columns, or are 0-based column numbers
    for a file without header (``header=False``, exactly ``columns`` columns).
    ``labels`` is the label set in class-id order; ``None`` means regression (a
    float score). ``metrics`` names functions of
    :data:`fairseq_meta.prep.glue_metrics.METRICS`, the headline one first; F1 counts
    class ``"1"`` as positive. ``config`` is the fine-tuning config's name
    (``configs/finetune/<config>.yaml``).
    """
    name: str
    inputs: tuple
    label: object
    labels: tuple = None
    metrics: tuple = ("accuracy",)
    config: str = None
    header: bool = True
    columns: int = None
    splits: tuple = TRAIN_DEV
    # Rows with the wrong number of columns or an empty sentence are dropped
    # (and counted) instead of being an error.
    drop_malformed: bool = False
    # Rows with one of these labels are dropped (and counted).
    drop_labels: tuple = ()

    def __post_init__(self):
        if self.config is None:
            object.__setattr__(self, "config", re.sub(r"[^a-z0-9]+", "_", self.name.lower()))

    @property
    def regression(self):
        return self.labels is None

    @property
    def single_sentence(self):
        return len(self.inputs) == 1

    @property
    def num_classes(self):
        return 1 if self.regression else len(self.labels)

    @property
    def score_metrics(self):
        """The metrics whose mean is the task's GLUE score: all of them."""
        return self.metrics

    def split_title(self, split):
        """The name of fairseq split ``split`` in result tables (MNLI-m, RTE, ...)."""
        for s in self.splits:
            if s.name == split and s.title:
                return s.title
        return self.name

    def to_dict(self):
        return asdict(self)


NLI3 = ("contradiction", "entailment", "neutral")

GLUE_TASKS = {task.name: task for task in [
    GlueTask("CoLA", inputs=(3,), label=1, labels=("0", "1"), metrics=("mcc",),
             header=False, columns=4),
    GlueTask("SST-2", inputs=("sentence",), label="label", labels=("0", "1")),
    GlueTask("MRPC", inputs=("#1 String", "#2 String"), label="Quality", labels=("0", "1"),
             metrics=("f1", "accuracy")),
    GlueTask("STS-B", inputs=("sentence1", "sentence2"), label="score",
             metrics=("pearson", "spearman")),
    # fairseq's preprocess_GLUE_tasks.sh drops QQP rows with the wrong number
    # of fields; so do we (counted in meta.json "dropped").
    GlueTask("QQP", inputs=("question1", "question2"), label="is_duplicate", labels=("0", "1"),
             metrics=("f1", "accuracy"), drop_malformed=True),
    GlueTask("MNLI", inputs=("sentence1", "sentence2"), label="gold_label", labels=NLI3,
             splits=(Split("train", ("train.tsv",)),
                     Split("valid", ("dev_matched.tsv",), "MNLI-m"),
                     Split("valid1", ("dev_mismatched.tsv",), "MNLI-mm"))),
    GlueTask("QNLI", inputs=("question", "sentence"), label="label",
             labels=("entailment", "not_entailment")),
    GlueTask("RTE", inputs=("sentence1", "sentence2"), label="label",
             labels=("entailment", "not_entailment")),
    GlueTask("WNLI", inputs=("sentence1", "sentence2"), label="label", labels=("0", "1")),
    # Not GLUE, but GLUE-format. Pairs without a majority label ("-") are dropped.
    GlueTask("SNLI", inputs=("sentence1", "sentence2"), label="gold_label", labels=NLI3,
             drop_labels=("-",),
             splits=(Split("train", ("train.tsv", "snli_1.0_train.jsonl", "train.jsonl")),
                     Split("valid", ("dev.tsv", "snli_1.0_dev.jsonl", "dev.jsonl")))),
]}


def task_key(name):
    """Case-, '-', '_'-insensitive key of a task name: sts-b, STSB, sts_b -> 'stsb'."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def lookup(name, tasks=None):
    """The task record of ``name`` (matched like :func:`task_key`) in ``tasks``
    (default :data:`GLUE_TASKS`); :class:`MetaConfigError` if unknown."""
    tasks = GLUE_TASKS if tasks is None else tasks
    for task in tasks.values():
        if task_key(task.name) == task_key(name):
            return task
    raise MetaConfigError(f"unknown GLUE task {name!r} (known: {', '.join(tasks)})")


def find_task_dir(root, name):
    """The directory of task ``name`` under ``root`` (``root/name`` or an entry
    whose name matches like :func:`task_key`), or None."""
    root = Path(root)
    if (root / name).is_dir():
        return root / name
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and task_key(entry.name) == task_key(name):
                return entry
    return None


def read_label_dict(path):
    """The labels of a label ``dict.txt`` (``<label> <count>`` lines), in class-id order."""
    symbols = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split(" ")
        if fields[-1] == "#fairseq:overwrite":
            fields = fields[:-1]
        if line.strip():
            symbols.append(" ".join(fields[:-1]) if len(fields) > 1 else fields[0])
    return real_labels(symbols)


def compute_metrics(task, preds, labels):
    """{metric: value} of ``task`` (a name or a :class:`GlueTask`), in its metric
    order, on the 0..1 scale. Classification takes class ids (F1 counts class 1
    as positive), regression real numbers."""
    task = task if isinstance(task, GlueTask) else lookup(task)
    return {m: glue_metrics.METRICS[m](preds, labels) for m in task.metrics}


def task_score(task_name, metrics):
    """The GLUE score of a task from its ``{metric: value}``: the mean of its
    score metrics (MRPC: mean(F1, accuracy); STS-B: mean(Pearson, Spearman)).
    NaN if any of them is missing or not finite."""
    task = task_name if isinstance(task_name, GlueTask) else lookup(task_name)
    values = [metrics.get(m) for m in task.score_metrics]
    if any(v is None or not math.isfinite(v) for v in values):
        return float("nan")
    return sum(values) / len(values)


def task_from_dict(data, where="task record"):
    """A :class:`GlueTask` from a JSON-like dict with its field names (``splits``
    as ``[{"name": .., "files": [..], "title": ..}]``); one-line error if malformed."""
    if not isinstance(data, dict):
        raise MetaConfigError(f"{where}: expected a JSON object with the fields of a GLUE task")
    known = set(GlueTask.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise MetaConfigError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
    for key in ("name", "inputs", "label"):
        if key not in data:
            raise MetaConfigError(f"{where}: field {key!r} is missing")
    values = dict(data)
    try:
        for key in ("inputs", "metrics", "drop_labels"):
            if key in values:
                values[key] = tuple(values[key])
        if values.get("labels") is not None:
            values["labels"] = tuple(str(x) for x in values["labels"])
        if "splits" in values:
            values["splits"] = tuple(Split(s["name"], tuple(s["files"]), s.get("title"))
                                     for s in values["splits"])
        task = GlueTask(**values)
    except (TypeError, KeyError) as e:
        raise MetaConfigError(f"{where}: malformed field ({e})")
    bad = [m for m in task.metrics if m not in glue_metrics.METRICS]
    if bad or not task.metrics:
        raise MetaConfigError(f"{where}: unknown metric {bad[0] if bad else None!r} "
                              f"(known: {', '.join(glue_metrics.METRICS)})")
    if not task.inputs or len(task.inputs) > 2:
        raise MetaConfigError(f"{where}: 'inputs' must name one or two columns")
    if not task.header and (not isinstance(task.columns, int)
                            or not all(isinstance(c, int) for c in (*task.inputs, task.label))):
        raise MetaConfigError(f"{where}: without a header, 'inputs' and 'label' are column "
                              "numbers and 'columns' the number of columns")
    if task.labels is not None and len(task.labels) < 2:
        raise MetaConfigError(f"{where}: 'labels' needs at least two classes (null: regression)")
    names = [s.name for s in task.splits]
    if "valid" not in names or names[0] not in ("train", "valid"):
        raise MetaConfigError(f"{where}: 'splits' must have 'valid' (and may start with 'train')")
    return task


def load_task_file(path):
    """A :class:`GlueTask` from a JSON file (the fields of :func:`task_from_dict`)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise MetaConfigError(f"task file {path}: {e.strerror}")
    except ValueError as e:
        raise MetaConfigError(f"task file {path}: not JSON ({e})")
    return task_from_dict(data, where=f"task file {path}")
