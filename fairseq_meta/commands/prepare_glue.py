"""Prepare GLUE-format data for fairseq's ``sentence_prediction`` task.

Every sentence is encoded with the *pre-training* sentencepiece model and
binarized against the *pre-training* dictionary (the two must come from the same
``scripts/prepare_corpus.py`` run; checked), so token ids match the pre-trained
model. Output: ``DESTDIR/<TASK>/{input0,input1,label}/`` and ``meta.json``, with
the ``<unk>`` share of every split. Input: the original GLUE layout,
``GLUE_DIR/<TASK>/{train,dev}.tsv``; a task without train file is prepared for
evaluation only; tasks outside the table of ``fairseq_meta/prep/glue.py`` are described
with ``--task-file``. Without ``--tasks``, what cannot be prepared is skipped and
named.

This script parses the flags; :mod:`fairseq_meta.prep.glue_data` does the work (the
layout in detail: its docstring and docs/preparing-data.md).

Example::

    python scripts/prepare_glue.py --glue-dir ../shared/data/glue --tasks RTE,MRPC \\
        --spm-model data/wiki/spm.model --dict data/wiki/dict.txt --destdir data-bin/glue
"""
import argparse
import logging
import math
import os

# Importing fairseq_meta imports fairseq, whose text_to_speech task turns on INFO
# logging for the whole process; a script prints its own progress lines.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.prep import glue, glue_data, imported_tokenizer  # noqa: E402
from fairseq_meta.run.cli import Cli, run  # noqa: E402

PROG = "prepare_glue"
fail = Cli.fail


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
                        "with a directory in --glue-dir; the others are skipped and named); "
                        f"known: {', '.join(glue.GLUE_TASKS)}")
    parser.add_argument("--task-file", action="append", default=[], metavar="FILE.json",
                        help="describe a GLUE-format task outside the built-in table: a JSON "
                        "object with the fields of fairseq_meta.prep.glue.GlueTask (repeatable)")
    parser.add_argument("--spm-model", default=None, metavar="PATH",
                        help="sentencepiece model of the pre-training data "
                        "(prepare_corpus.py's DESTDIR/spm.model)")
    parser.add_argument("--dict", default=None, metavar="PATH",
                        help="fairseq dictionary of the pre-training data "
                        "(prepare_corpus.py's DESTDIR/dict.txt)")
    parser.add_argument("--tokenizer-from", default=None, metavar="MODEL_DIR",
                        help="instead of --spm-model and --dict: the tokenizer and dict.txt of "
                        "a model directory written by scripts/import_model.py")
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


def main(argv=None):
    args = build_argparser().parse_args(argv)
    if args.max_rows is not None and args.max_rows < 1:
        fail(f"--max-rows must be >= 1 (got {args.max_rows})")
    if args.workers < 1:
        fail(f"--workers must be >= 1 (got {args.workers})")
    if not (math.isfinite(args.regression_scale) and args.regression_scale > 0):
        fail(f"--regression-scale must be a positive number (got {args.regression_scale})")
    if args.tokenizer_from is not None:
        imported_tokenizer.check_flags(args.tokenizer_from,
                                       {"--spm-model": args.spm_model, "--dict": args.dict})
    elif args.spm_model is None or args.dict is None:
        fail("give --spm-model and --dict (the pre-training data's), or --tokenizer-from MODEL_DIR")
    tasks = dict(glue.GLUE_TASKS)
    for path in args.task_file:
        task = glue.load_task_file(path)
        tasks[task.name] = task
    log = Cli(PROG).log
    names = None if args.tasks is None else args.tasks.split(",")
    selected, skipped = glue_data.select_tasks(args.glue_dir, names, tasks)
    metas = glue_data.prepare_glue(
        selected, args.destdir, spm_model=args.spm_model, dict_path=args.dict,
        max_rows=args.max_rows, regression_scale=args.regression_scale, workers=args.workers,
        force=args.force, skipped=skipped, tokenizer_from=args.tokenizer_from, log=log)
    for meta in metas:
        kind = ("regression" if meta["regression"]
                else f"{meta['num_classes']} classes: {', '.join(meta['labels'])}")
        rows = ", ".join(f"{n} {r} rows" for n, r in meta["rows"].items())
        print(f"{meta['task']}: {rows} ({kind}) -> {os.path.join(args.destdir, meta['task'])}")


if __name__ == "__main__":  # python -m fairseq_meta.commands.prepare_glue
    run(PROG, main)
