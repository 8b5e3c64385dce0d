#!/usr/bin/env python3
"""Score pre-trained checkpoints: fine-tuning, few-shot, frozen-feature probe and adaptation to a new domain, with confidence intervals over seeds and paired differences to the first checkpoint.

The flags and their checks are fairseq_meta/commands/evaluate.py (``--help``)."""
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.commands.evaluate import PROG, main  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

if __name__ == "__main__":
    run(PROG, main)
