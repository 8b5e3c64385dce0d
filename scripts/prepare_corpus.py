#!/usr/bin/env python3
"""Turn raw text into fairseq binarized data for (meta-)pre-training.

The flags and their checks are fairseq_meta/commands/prepare_corpus.py (``--help``)."""
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.commands.prepare_corpus import PROG, main  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

if __name__ == "__main__":
    run(PROG, main)
