#!/usr/bin/env python3
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

Examples::

    python scripts/prepare_corpus.py --destdir data/wiki wikitext-2/valid.txt
    python scripts/prepare_corpus.py --destdir data/multi \\
        --corpus wiki=wikitext-2/valid.txt --corpus books=gutenberg/nltk-selections
"""
import argparse
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

PROG = "prepare_corpus"
DEFAULT_VOCAB_SIZE = 8000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# File names that live directly in DESTDIR; a corpus subdirectory may not use them.
RESERVED_NAMES = {"spm.model", "spm.vocab", "dict.txt", "preprocess.log"}
PG_START = re.compile(r"^\s*\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG", re.I)
PG_END = re.compile(r"^\s*\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG", re.I)


def die(message):
    """Exit with a one-line error message naming the program."""
    sys.exit(f"{PROG}: error: {message}")


def log(message):
    print(f"[{PROG}] {message}", flush=True)


# --------------------------------------------------------------------------- #
# Arguments
# --------------------------------------------------------------------------- #
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
                        f"{DEFAULT_VOCAB_SIZE}; a soft limit, lowered "
                        "automatically when the corpus is too small)")
    parser.add_argument("--spm-model", default=None, metavar="PATH",
                        help="reuse this sentencepiece model instead of "
                        "training one (e.g. DESTDIR/spm.model of an earlier run)")
    parser.add_argument("--dict", default=None, metavar="PATH",
                        help="reuse this fairseq dictionary (e.g. DESTDIR/dict.txt "
                        "of the pre-training data, so token ids match a "
                        "pre-trained model); needs --spm-model")
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


def _input_files(path):
    """The text files of one input PATH (a file, or *.txt under a directory)."""
    if os.path.isfile(path):
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if f.endswith(".txt"))
    return files


def _is_inside(path, parent):
    path, parent = os.path.realpath(path), os.path.realpath(parent)
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def validate_args(parser, args):
    """Check every argument; exit with a one-line error before any output.

    Returns a list of (name, [files]) pairs; name is None for a single corpus.
    """
    corpora = []
    if os.path.exists(args.destdir) and not os.path.isdir(args.destdir):
        die(f"--destdir {args.destdir} exists and is not a directory")
    if args.paths and args.corpus:
        die("give either positional PATHs or --corpus NAME=PATH, not both")
    if args.corpus:
        seen = set()
        for spec in args.corpus:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                die(f"--corpus expects NAME=PATH, got {spec!r}")
            if not NAME_RE.match(name) or name in RESERVED_NAMES:
                die(f"--corpus {spec!r}: invalid name {name!r} (use letters, "
                    "digits, '_', '-', '.'; not a reserved file name)")
            if name in seen:
                die(f"--corpus {spec!r}: duplicate corpus name {name!r}")
            seen.add(name)
            corpora.append((name, [path]))
    elif args.paths:
        corpora.append((None, list(args.paths)))
    else:
        die("no input: give text PATHs or --corpus NAME=PATH (see --help)")
    if len(corpora) == 1:
        corpora = [(None, corpora[0][1])]

    result = []
    for name, paths in corpora:
        files = []
        for path in paths:
            if not os.path.exists(path):
                die(f"input not found: {path}")
            if not (os.path.isfile(path) or os.path.isdir(path)):
                die(f"input is neither a file nor a directory: {path}")
            found = _input_files(path)
            if not found:
                die(f"no *.txt files in directory: {path}")
            if _is_inside(path, args.destdir):
                die(f"input {path} is inside --destdir {args.destdir}")
            files.extend(found)
        result.append((name, files))

    if args.vocab_size is not None and args.vocab_size < 16:
        die(f"--vocab-size must be >= 16 (got {args.vocab_size})")
    if not 0.0 < args.valid_fraction < 1.0:
        die(f"--valid-fraction must be between 0 and 1 (got {args.valid_fraction})")
    if args.workers < 1:
        die(f"--workers must be >= 1 (got {args.workers})")
    if args.max_line_chars < 0:
        die(f"--max-line-chars must be >= 0 (got {args.max_line_chars})")
    if args.spm_input_lines < 1:
        die(f"--spm-input-lines must be >= 1 (got {args.spm_input_lines})")
    if args.spm_model is not None and not os.path.isfile(args.spm_model):
        die(f"--spm-model not found: {args.spm_model}")
    if args.dict is not None:
        if args.spm_model is None:
            die("--dict needs --spm-model (the model that made its pieces)")
        if not os.path.isfile(args.dict) or os.path.getsize(args.dict) == 0:
            die(f"--dict not found or empty: {args.dict}")

    dest = args.destdir
    if os.path.exists(dest):
        if os.listdir(dest):
            if not args.force:
                die(f"--destdir {dest} exists and is not empty "
                    "(use --force to replace it)")
            real = os.path.realpath(dest)
            if (real in (os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~")))
                    or _is_inside(os.getcwd(), real)):
                die(f"--force refuses to replace {dest} (it is /, your home "
                    "directory or contains the current directory)")

    # Slower checks last: they load the model / dictionary.
    if args.spm_model is not None:
        load_spm(args.spm_model)  # exits with a one-line error if unusable
    if args.dict is not None:
        check_dictionary(args.dict)
    return result


# --------------------------------------------------------------------------- #
# Reading text
# --------------------------------------------------------------------------- #
def strip_gutenberg(lines):
    """Keep only the lines between the Project Gutenberg START/END markers."""
    start = next((i for i, ln in enumerate(lines) if PG_START.match(ln)), None)
    if start is None:
        return lines, False
    end = next((i for i in range(start + 1, len(lines)) if PG_END.match(lines[i])),
               len(lines))
    return lines[start + 1:end], True


def split_long_line(line, max_chars):
    """Split a line into pieces of at most ``max_chars`` characters.

    Breaks after sentence-final punctuation where possible, else at spaces;
    a single word longer than ``max_chars`` is kept whole.
    """
    if max_chars <= 0 or len(line) <= max_chars:
        return [line]
    units = []
    for sentence in re.split(r"(?<=[.!?])\s+", line):
        if len(sentence) <= max_chars:
            units.append(sentence)
        else:
            units.extend(sentence.split(" "))
    pieces, current = [], ""
    for unit in units:
        if current and len(current) + 1 + len(unit) > max_chars:
            pieces.append(current)
            current = unit
        else:
            current = f"{current} {unit}" if current else unit
    if current:
        pieces.append(current)
    return pieces


def read_documents(path, max_line_chars):
    """Read a text file into a list of documents (lists of non-empty lines).

    Exits with a one-line error if the file is not UTF-8 text.
    """
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            text = f.read()
    except UnicodeDecodeError as e:
        die(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        die(f"cannot read {path}: {e.strerror}")
    # Universal newlines turned \r\n and \r into \n; split only on \n (not on
    # the other characters str.splitlines() treats as line breaks).
    lines, stripped = strip_gutenberg(text.split("\n"))
    documents, current = [], []
    for raw in lines:
        line = " ".join(raw.split())
        if line:
            current.extend(split_long_line(line, max_line_chars))
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents, stripped


def split_train_valid(documents, fraction, seed):
    """Hold out whole documents; at least one for valid, one for train."""
    n = len(documents)
    n_valid = min(max(1, round(fraction * n)), n - 1)
    valid_ids = set(random.Random(seed).sample(range(n), n_valid))
    train = [d for i, d in enumerate(documents) if i not in valid_ids]
    valid = [d for i, d in enumerate(documents) if i in valid_ids]
    return train, valid


def write_documents(path, documents):
    """Write documents one line per line, one empty line between documents."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, doc in enumerate(documents):
            if i:
                f.write("\n")
            for line in doc:
                f.write(line + "\n")


# --------------------------------------------------------------------------- #
# sentencepiece
# --------------------------------------------------------------------------- #
def train_spm(lines, model_path, args, vocab_size):
    """Train a sentencepiece model on ``lines``, write it to ``model_path``.

    Returns the vocabulary size.  ``hard_vocab_limit=False`` lets a small corpus
    end with a smaller vocabulary instead of failing; if sentencepiece still
    rejects the size (e.g. for bpe) it is lowered to the maximum sentencepiece
    reports.  The model is trained from an iterator and written from memory, so
    it holds no temporary file names and is byte-for-byte reproducible.
    """
    import sentencepiece as spm

    while True:
        spm.set_random_generator_seed(args.seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                model_type=args.spm_model_type,
                vocab_size=vocab_size,
                hard_vocab_limit=False,
                character_coverage=0.9999,
                input_sentence_size=args.spm_input_lines,
                shuffle_input_sentence=True,
                max_sentence_length=1 << 16,
                num_threads=args.workers,
                minloglevel=2,
                # Keep <unk> only: fairseq's dictionary adds <s>, <pad>, </s>.
                bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
            )
            break
        except RuntimeError as e:
            match = re.search(r"value <= (\d+)", str(e))
            if not match or int(match.group(1)) >= vocab_size:
                die(f"sentencepiece training failed: {str(e).strip().splitlines()[-1]}")
            lowered = int(match.group(1))
            log(f"corpus too small for --vocab-size {vocab_size}; "
                f"lowering it to {lowered}")
            vocab_size = lowered
    with open(model_path, "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return sp.get_piece_size()


def load_spm(path):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as e:
        die(f"--spm-model {path}: cannot load sentencepiece model "
            f"({str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__})")


def check_dictionary(path):
    """Exit with a one-line error unless ``path`` is in fairseq's dict.txt format.

    Every line is ``<token> <count>``, optionally followed by the flag
    ``#fairseq:overwrite``.  (Checked here rather than with
    ``fairseq.data.Dictionary.load``: importing fairseq takes seconds.)
    """
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.rstrip("\n").split(" ")
                if fields[-1] == "#fairseq:overwrite":
                    fields = fields[:-1]
                try:
                    ok = len(fields) >= 2 and fields[0] != "" and int(fields[-1]) >= 0
                except ValueError:
                    ok = False
                if not ok:
                    die(f"--dict {path}: not a fairseq dictionary (line {number} "
                        f"is not '<token> <count>': {line.strip()[:40]!r})")
    except UnicodeDecodeError:
        die(f"--dict {path}: not a fairseq dictionary (not UTF-8 text)")


def write_vocab(sp, path):
    """Write a ``.vocab`` file (piece<TAB>score) for a loaded model."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


def encode_documents(sp, documents, path, workers):
    """Encode documents to space-separated pieces; return the piece count."""
    lines = [line for doc in documents for line in doc]
    encoded = iter(sp.encode(lines, out_type=str, num_threads=workers))
    n_pieces = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, doc in enumerate(documents):
            if i:
                f.write("\n")
            for _ in doc:
                pieces = next(encoded)
                n_pieces += len(pieces)
                f.write(" ".join(pieces) + "\n")
    return n_pieces


# --------------------------------------------------------------------------- #
# fairseq-preprocess
# --------------------------------------------------------------------------- #
def run_preprocess(jobs, workers):
    """Run ``fairseq-preprocess --only-source`` once per argument list in ``jobs``.

    Up to ``workers`` runs go at once (each with ``--workers`` set to its share),
    so several corpora are binarized in parallel.  On a failure, prints the
    tool's output and exits with a one-line error.
    """
    parallel = max(1, min(workers, len(jobs)))
    each = max(1, workers // parallel)
    for i in range(0, len(jobs), parallel):
        running = []
        for extra_args in jobs[i:i + parallel]:
            cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
                   "--workers", str(each), *extra_args]
            running.append((cmd, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        failed = []
        for cmd, proc in running:
            output = proc.communicate()[0]
            if proc.returncode != 0:
                failed.append((cmd, proc.returncode, output))
        if failed:
            cmd, code, output = failed[0]
            sys.stderr.write(output[-4000:])
            die(f"fairseq-preprocess failed (exit {code}): {' '.join(cmd)}")


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def main(argv=None):
    parser = build_argparser()
    args = parser.parse_args(argv)
    corpora = validate_args(parser, args)
    t0 = time.time()

    # 1-3: read, split into documents, hold out validation documents.
    splits = []  # (name, train_docs, valid_docs)
    messages = []  # printed once all input has been read without error
    for name, files in corpora:
        documents = []
        for path in files:
            docs, stripped = read_documents(path, args.max_line_chars)
            if stripped:
                messages.append(f"{path}: kept the text between the Project "
                                "Gutenberg START/END markers")
            documents.extend(docs)
        label = name or "corpus"
        where = f"corpus {name!r} ({', '.join(files)})" if name else ", ".join(files)
        if not documents:
            die(f"no text in {where}")
        if len(documents) < 2:
            die(f"only one document (paragraph) in {where}; need at least 2 "
                "to split train/valid")
        train, valid = split_train_valid(documents, args.valid_fraction, args.seed)
        messages.append(f"{label}: {len(files)} file(s), {len(documents)} "
                        f"documents ({len(train)} train, {len(valid)} valid)")
        splits.append((name, train, valid))
    for message in messages:
        log(message)

    spm_model = args.spm_model
    if spm_model is not None:
        sp = load_spm(spm_model)
        if args.vocab_size is not None:
            log(f"--vocab-size {args.vocab_size} ignored: reusing {spm_model} "
                f"(vocabulary {sp.get_piece_size()})")

    dest = os.path.abspath(args.destdir)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-",
                             dir=os.path.dirname(dest))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp creates it private (0700)
    work = os.path.join(stage, "work")
    os.mkdir(work)
    try:
        # 4: sentencepiece.
        if spm_model is None:
            lines = [line for _, train, _ in splits for doc in train for line in doc]
            vocab_size = args.vocab_size or DEFAULT_VOCAB_SIZE
            log(f"training sentencepiece ({args.spm_model_type}, vocab "
                f"{vocab_size}) on {len(lines)} training lines of "
                f"{len(splits)} corpus/corpora")
            model_path = os.path.join(stage, "spm.model")
            n = train_spm(lines, model_path, args, vocab_size)
            log(f"sentencepiece model: {n} pieces ({time.time() - t0:.1f}s)")
            if n < vocab_size:
                log(f"note: the corpus is too small for {vocab_size} pieces; "
                    f"the vocabulary was lowered to {n}")
            sp = load_spm(model_path)
            write_vocab(sp, os.path.join(stage, "spm.vocab"))
        else:
            shutil.copyfile(spm_model, os.path.join(stage, "spm.model"))
            vocab = os.path.splitext(spm_model)[0] + ".vocab"
            if os.path.isfile(vocab):
                shutil.copyfile(vocab, os.path.join(stage, "spm.vocab"))
            else:
                write_vocab(sp, os.path.join(stage, "spm.vocab"))

        stats = []
        for name, train, valid in splits:
            sub = os.path.join(work, name or "corpus")
            os.mkdir(sub)
            n_train = encode_documents(sp, train, os.path.join(sub, "train.txt"),
                                       args.workers)
            n_valid = encode_documents(sp, valid, os.path.join(sub, "valid.txt"),
                                       args.workers)
            stats.append((name, train, valid, n_train, n_valid))
        log("encoded all text with sentencepiece")

        # 5: fairseq-preprocess.  One corpus without --dict: a single call
        # builds dict.txt from its training text.  Otherwise every corpus is
        # binarized with --srcdict: the given --dict, or a joint dictionary
        # built first (--dict-only) from the training text of all corpora.
        multi = len(splits) > 1
        srcdict = args.dict
        if srcdict is None and multi:
            joint = os.path.join(work, "joint-train.txt")
            with open(joint, "w", encoding="utf-8") as out:
                for name, *_ in splits:
                    with open(os.path.join(work, name, "train.txt"),
                              encoding="utf-8") as f:
                        shutil.copyfileobj(f, out)
            log("building the joint dictionary with fairseq-preprocess --dict-only")
            run_preprocess([["--trainpref", joint, "--destdir", stage,
                             "--dict-only"]], args.workers)
            os.remove(joint)
            srcdict = os.path.join(stage, "dict.txt")
        jobs = []
        for name, *_ in splits:
            sub = os.path.join(work, name or "corpus")
            job = ["--trainpref", os.path.join(sub, "train.txt"),
                   "--validpref", os.path.join(sub, "valid.txt"),
                   "--destdir", os.path.join(stage, name) if multi else stage]
            jobs.append(job if srcdict is None else ["--srcdict", srcdict] + job)
        log(f"binarizing {', '.join(n for n, *_ in splits) if multi else 'the corpus'} "
            "with fairseq-preprocess" + (" --srcdict" if srcdict else ""))
        run_preprocess(jobs, args.workers)
        if multi and args.dict is not None:
            # fairseq re-saves the --dict it loads; keep that copy on top too.
            shutil.copyfile(os.path.join(stage, splits[0][0], "dict.txt"),
                            os.path.join(stage, "dict.txt"))
        shutil.rmtree(work)

        # Move the finished output into place.
        if os.path.isdir(dest):
            shutil.rmtree(dest) if os.listdir(dest) else os.rmdir(dest)
        os.rename(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise

    with open(os.path.join(dest, "dict.txt"), encoding="utf-8") as f:
        dict_size = sum(1 for _ in f)
    log(f"done in {time.time() - t0:.1f}s; dictionary: {dict_size} entries "
        "(+4 special symbols)")
    for name, train, valid, n_train, n_valid in stats:
        where = os.path.join(args.destdir, name) if name else args.destdir
        print(f"{name or 'corpus'}: train {len(train)} documents / "
              f"{sum(map(len, train))} lines / {n_train} tokens; valid "
              f"{len(valid)} documents / {sum(map(len, valid))} lines / "
              f"{n_valid} tokens -> {where}")
    print(f"sentencepiece model: {os.path.join(args.destdir, 'spm.model')}")


if __name__ == "__main__":
    main()
