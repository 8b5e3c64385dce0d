"""Turn raw text into fairseq binarized data for (meta-)pre-training.

Steps:

1. read every input file (``utf-8-sig``, universal newlines); in files with
   Project Gutenberg ``*** START OF`` / ``*** END OF`` markers, keep only the
   text between them;
2. split the text into *documents* on blank lines (whitespace inside a line is
   collapsed to single spaces);
3. hold out whole documents for validation (``--valid-fraction``, at least one
   document per corpus; the choice depends only on ``--seed``);
4. train a sentencepiece model on the training text of all corpora together
   (or reuse ``--spm-model``) and encode every line into space-separated pieces,
   keeping one empty line between documents;
5. binarize with ``fairseq-preprocess --only-source`` (run as
   ``python -m fairseq_cli.preprocess``), building the dictionary from the
   training text or reusing ``--dict``.

To encode more data (e.g. fine-tuning text) exactly like earlier data, pass
``--spm-model OLD/spm.model --dict OLD/dict.txt``.

Output layout::

    one corpus (positional PATHs, or a single --corpus):
      DESTDIR/spm.model spm.vocab dict.txt train.{bin,idx} valid.{bin,idx}
    several corpora (--corpus NAME=PATH ...):
      DESTDIR/spm.model spm.vocab dict.txt
      DESTDIR/NAME/dict.txt train.{bin,idx} valid.{bin,idx}   (one per corpus)

With several corpora the dictionary is built once from the training text of all
corpora, and every ``DESTDIR/NAME/dict.txt`` is a byte-identical copy of
``DESTDIR/dict.txt``.  The output is built in a temporary directory next to
DESTDIR and moved into place at the end, so a failed run leaves nothing behind.

The work is done by :func:`fairseq_meta.prep.corpus.prepare_corpus`; this script
parses and checks the flags.

Examples::

    python scripts/prepare_corpus.py --destdir data/wiki wikitext-2/valid.txt
    python scripts/prepare_corpus.py --destdir data/multi \\
        --corpus wiki=wikitext-2/valid.txt --corpus books=gutenberg/nltk-selections
"""
import argparse
import logging
import os
import re

# Importing fairseq_meta imports fairseq, whose text_to_speech task turns on INFO
# logging for the whole process; a script prints its own progress lines.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.prep import corpus, imported_tokenizer  # noqa: E402
from fairseq_meta.run.cli import Cli, run  # noqa: E402

PROG = "prepare_corpus"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# File names that live directly in DESTDIR; a corpus subdirectory may not use them.
RESERVED_NAMES = {"spm.model", "spm.vocab", "dict.txt", "preprocess.log"}
fail = Cli.fail


def build_argparser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn raw text files into fairseq binarized data: strip "
        "Project Gutenberg boilerplate, split documents on blank lines, hold out "
        "whole documents for validation, train (or reuse) a sentencepiece model "
        "and run fairseq-preprocess --only-source. One corpus gives "
        "DESTDIR/{dict.txt,train.*,valid.*}; several corpora give "
        "DESTDIR/NAME/{dict.txt,train.*,valid.*} with the same dict.txt.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="text file(s) or directories of *.txt files "
                        "(searched recursively) forming a single corpus")
    parser.add_argument("--corpus", action="append", default=[],
                        metavar="NAME=PATH",
                        help="a named corpus (file or directory of *.txt); "
                        "repeat for several corpora")
    parser.add_argument("--destdir", required=True, metavar="DIR",
                        help="output directory (must not exist or be empty, "
                        "unless --force)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing non-empty --destdir")
    parser.add_argument("--vocab-size", type=int, default=None, metavar="N",
                        help=f"sentencepiece vocabulary size (default: "
                        f"{corpus.DEFAULT_VOCAB_SIZE}; a soft limit, lowered "
                        "automatically when the corpus is too small)")
    parser.add_argument("--spm-model", default=None, metavar="PATH",
                        help="reuse this sentencepiece model instead of "
                        "training one (e.g. DESTDIR/spm.model of an earlier run)")
    parser.add_argument("--dict", default=None, metavar="PATH",
                        help="reuse this fairseq dictionary (e.g. DESTDIR/dict.txt "
                        "of the pre-training data, so token ids match a "
                        "pre-trained model); needs --spm-model")
    parser.add_argument("--tokenizer-from", default=None, metavar="MODEL_DIR",
                        help="encode with the tokenizer of a model directory written by "
                        "scripts/import_model.py and binarize with its dict.txt, so the data "
                        "shares the imported model's vocabulary (instead of sentencepiece)")
    parser.add_argument("--spm-model-type", choices=["unigram", "bpe"],
                        default="unigram", help="sentencepiece model type")
    parser.add_argument("--spm-input-lines", type=int, default=300000,
                        metavar="N",
                        help="train sentencepiece on at most N lines, sampled "
                        "with --seed (keeps training fast on big corpora)")
    parser.add_argument("--valid-fraction", type=float, default=0.02,
                        metavar="F",
                        help="fraction of each corpus's documents held out for "
                        "validation (at least one document)")
    parser.add_argument("--max-line-chars", type=int, default=0, metavar="N",
                        help="split lines longer than N characters at sentence "
                        "ends (then spaces) into pieces of at most N "
                        "characters; 0 keeps lines as they are")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed for the validation split and sentencepiece")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes/threads for sentencepiece and "
                        "fairseq-preprocess")
    return parser


def validate_args(args):
    """Check every argument; one-line error before any output.

    Returns a list of (name, [files]) pairs; name is None for a single corpus.
    """
    corpora = []
    if os.path.exists(args.destdir) and not os.path.isdir(args.destdir):
        fail(f"--destdir {args.destdir} exists and is not a directory")
    if args.paths and args.corpus:
        fail("give either positional PATHs or --corpus NAME=PATH, not both")
    if args.corpus:
        seen = set()
        for spec in args.corpus:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                fail(f"--corpus expects NAME=PATH, got {spec!r}")
            if not NAME_RE.match(name) or name in RESERVED_NAMES:
                fail(f"--corpus {spec!r}: invalid name {name!r} (use letters, "
                    "digits, '_', '-', '.'; not a reserved file name)")
            if name in seen:
                fail(f"--corpus {spec!r}: duplicate corpus name {name!r}")
            seen.add(name)
            corpora.append((name, [path]))
    elif args.paths:
        corpora.append((None, list(args.paths)))
    else:
        fail("no input: give text PATHs or --corpus NAME=PATH (see --help)")
    if len(corpora) == 1:
        corpora = [(None, corpora[0][1])]

    result = []
    for name, paths in corpora:
        files = []
        for path in paths:
            if not os.path.exists(path):
                fail(f"input not found: {path}")
            if not (os.path.isfile(path) or os.path.isdir(path)):
                fail(f"input is neither a file nor a directory: {path}")
            found = corpus.input_files(path)
            if not found:
                fail(f"no *.txt files in directory: {path}")
            if corpus.is_inside(path, args.destdir):
                fail(f"input {path} is inside --destdir {args.destdir}")
            files.extend(found)
        result.append((name, files))

    if args.vocab_size is not None and args.vocab_size < 16:
        fail(f"--vocab-size must be >= 16 (got {args.vocab_size})")
    if not 0.0 < args.valid_fraction < 1.0:
        fail(f"--valid-fraction must be between 0 and 1 (got {args.valid_fraction})")
    if args.workers < 1:
        fail(f"--workers must be >= 1 (got {args.workers})")
    if args.max_line_chars < 0:
        fail(f"--max-line-chars must be >= 0 (got {args.max_line_chars})")
    if args.spm_input_lines < 1:
        fail(f"--spm-input-lines must be >= 1 (got {args.spm_input_lines})")
    if args.spm_model is not None and not os.path.isfile(args.spm_model):
        fail(f"--spm-model not found: {args.spm_model}")
    if args.dict is not None:
        if args.spm_model is None:
            fail("--dict needs --spm-model (the model that made its pieces)")
        if not os.path.isfile(args.dict) or os.path.getsize(args.dict) == 0:
            fail(f"--dict not found or empty: {args.dict}")

    if args.tokenizer_from is not None:
        imported_tokenizer.check_flags(args.tokenizer_from, {
            "--spm-model": args.spm_model, "--dict": args.dict, "--vocab-size": args.vocab_size})
    corpus.check_replaceable(args.destdir, args.force)
    return result


def main(argv=None):
    args = build_argparser().parse_args(argv)
    corpora = validate_args(args)
    stats = corpus.prepare_corpus(
        corpora, args.destdir, vocab_size=args.vocab_size, spm_model=args.spm_model,
        dict_path=args.dict, spm_model_type=args.spm_model_type,
        spm_input_lines=args.spm_input_lines, valid_fraction=args.valid_fraction,
        max_line_chars=args.max_line_chars, seed=args.seed, workers=args.workers,
        tokenizer_from=args.tokenizer_from, log=Cli(PROG).log)
    for name, train, valid, counts, unk in stats:
        where = os.path.join(args.destdir, name) if name else args.destdir
        print(f"{name or 'corpus'}: train {len(train)} documents / "
              f"{sum(map(len, train))} lines / {counts['train'].tokens} tokens; valid "
              f"{len(valid)} documents / {sum(map(len, valid))} lines / "
              f"{counts['valid'].tokens} tokens; <unk> {corpus.format_rates(unk)} -> {where}")
    if args.tokenizer_from is not None:
        print(f"tokenizer: {os.path.join(args.destdir, 'tokenizer.json')} (from {args.tokenizer_from})")
    else:
        print(f"sentencepiece model: {os.path.join(args.destdir, 'spm.model')}")


if __name__ == "__main__":  # python -m fairseq_meta.commands.prepare_corpus
    run(PROG, main)
