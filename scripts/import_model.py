#!/usr/bin/env python3
"""Import a transformers BERT checkpoint directory as a fairseq RoBERTa model directory.

The flags and their checks are fairseq_meta/commands/import_model.py (``--help``)."""
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.commands.import_model import PROG, main  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

if __name__ == "__main__":
    run(PROG, main)
