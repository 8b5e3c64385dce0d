"""Write a small English corpus made of the Python standard library's docstrings.

Every machine that has Python has this text, so it is the default pre-training
corpus of ``scripts/pretrain.sh`` (no download needed).  The docstrings are
read by *parsing* the standard library's source files (never importing them),
by :mod:`fairseq_meta.prep.stdlib_corpus`.

Output layout (the raw-text layout that ``scripts/prepare_corpus.py`` expects):

* every docstring (module, class, function) with at least ``--min-words`` words
  of prose is one *document*;
* one paragraph per line (the wrapped lines of a paragraph are joined);
* a blank line between documents.

Doctest examples (``>>>`` and their output), indented code blocks and other
code-like lines are dropped.  Identical docstrings are written once.  Files are
visited in sorted path order, so the output is deterministic for a given Python
installation.

Example::

    python scripts/stdlib_corpus.py --out runs/corpus/stdlib.txt
"""
import argparse
import logging
import os
import sys
import sysconfig

# Importing fairseq_meta imports fairseq, whose text_to_speech task turns on INFO
# logging for the whole process; a script prints its own progress lines.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.prep import stdlib_corpus  # noqa: E402
from fairseq_meta.run.cli import Cli, run  # noqa: E402

PROG = "stdlib_corpus"
fail = Cli.fail


def _is_stdout(path):
    """Whether ``path`` names the file this process's stdout writes to."""
    try:
        out, fd1 = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (fd1.st_dev, fd1.st_ino)


def build_argparser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write the Python standard library's docstrings as a "
        "plain-text corpus: one paragraph per line, a blank line between "
        "documents (one document per docstring). Modules are parsed with ast, "
        "never imported.",
    )
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output text file (parent directories are created); "
                        "'-' writes to stdout (the summary then goes to stderr)")
    parser.add_argument("--max-docs", type=int, default=None, metavar="N",
                        help="stop after N documents (default: all)")
    parser.add_argument("--min-words", type=int, default=20, metavar="N",
                        help="skip docstrings with fewer than N words of prose "
                        "(default: %(default)s)")
    parser.add_argument("--stdlib", default=None, metavar="DIR",
                        help="directory to read instead of this interpreter's "
                        "standard library (sysconfig 'stdlib' path)")
    return parser


def main(argv=None):
    args = build_argparser().parse_args(argv)
    if args.max_docs is not None and args.max_docs < 1:
        fail(f"--max-docs must be >= 1 (got {args.max_docs})")
    if args.min_words < 1:
        fail(f"--min-words must be >= 1 (got {args.min_words})")
    root = args.stdlib or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        fail(f"standard library directory not found: {root}")
    if os.path.isdir(args.out):
        fail(f"--out {args.out} is a directory")

    documents, n_files = stdlib_corpus.stdlib_documents(root, args.min_words, args.max_docs)
    text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
    to_stdout = args.out == "-" or _is_stdout(args.out)
    if args.out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    elif os.path.islink(args.out) or (os.path.exists(args.out)
                                      and not os.path.isfile(args.out)):
        # /dev/stdout, a pipe, a symlink: write through it, never replace it.
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        # A regular file: write a temporary file and rename it into place, so
        # an interrupted run leaves no half-written corpus.
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, args.out)

    n_lines = sum(len(doc) for doc in documents)
    n_words = sum(len(p.split()) for doc in documents for p in doc)
    print(f"{PROG}: wrote {len(documents)} documents, {n_lines} lines, "
          f"{n_words} words from {n_files} files under {root} to {args.out}",
          file=sys.stderr if to_stdout else sys.stdout)


if __name__ == "__main__":  # python -m fairseq_meta.commands.stdlib_corpus
    run(PROG, main)
