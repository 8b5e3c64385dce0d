#!/usr/bin/env python3
"""The meta-pretraining verdict of docs/results.md (issue 10) in one command: Gutenberg corpus, a sweep of inner settings at pre-training seed 1, the automatic selection (lowest validation loss at θ), k = 0 against the selected k = 1 on fresh pre-training seeds, the same pair with MLM + NSP, supervised meta-training (meta_sentence_prediction on three GLUE tasks) with k = 0 and the selected k = 1 fine-tuned on held-out tasks, the evaluation of every checkpoint, and a report with the sweep table, comparisons paired by pre-training seed and two plots.

The flags and their checks are fairseq_meta/commands/reproduce_verdict.py (``--help``)."""
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.commands.reproduce_verdict import PROG, main  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

if __name__ == "__main__":
    run(PROG, main)
