#!/usr/bin/env python3
"""Compare pre-training settings paired by pre-training seed, from the results.json files of scripts/evaluate.py.

The flags and their checks are fairseq_meta/commands/verdict.py (``--help``)."""
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.commands.verdict import PROG, main  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

if __name__ == "__main__":
    run(PROG, main)
