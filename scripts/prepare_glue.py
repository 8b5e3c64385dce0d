#!/usr/bin/env python3
"""Prepare GLUE-format data for fairseq's ``sentence_prediction`` task.

The flags and their checks are fairseq_meta/commands/prepare_glue.py (``--help``)."""
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.commands.prepare_glue import PROG, main  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

if __name__ == "__main__":
    run(PROG, main)
