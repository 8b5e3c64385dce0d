"""Raw text to fairseq binarized data: what ``scripts/prepare_corpus.py`` and
``scripts/prepare_glue.py`` share.

* reading text: UTF-8 (BOM dropped), universal newlines, Project Gutenberg
  boilerplate stripped, documents split on blank lines (:func:`read_documents`);
* sentencepiece: training (reproducible byte for byte), loading, encoding
  documents into space-separated pieces (:func:`train_spm`, :func:`encode_documents`);
* the fairseq dictionary: its format (:func:`check_dictionary`) and whether it was
  made from the pieces of a given sentencepiece model (:func:`check_spm_matches_dict`;
  a model and a dictionary of two different runs would silently map many tokens
  to ``<unk>``);
* ``fairseq-preprocess --only-source``, several runs per process and several
  processes at once (:func:`run_preprocess`);
* staging: output is built in a hidden directory and renamed into place
  (:func:`make_stage`), so a failed run leaves nothing behind;
* :func:`prepare_corpus`, the whole of ``prepare_corpus.py``.

Bad input raises :class:`~fairseq_meta.errors.MetaConfigError` with one line.
``log`` arguments are callables taking one message (``Cli(prog).log``).
"""
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

from ..errors import MetaConfigError

DEFAULT_VOCAB_SIZE = 8000
PG_START = re.compile(r"^\s*\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG", re.I)
PG_END = re.compile(r"^\s*\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG", re.I)
# More dictionary symbols than this share that the sentencepiece model cannot
# have produced: the two come from different runs (see check_spm_matches_dict).
MAX_FOREIGN_SYMBOLS = 0.01


def _quiet(message):
    pass


def is_inside(path, parent):
    path, parent = os.path.realpath(path), os.path.realpath(parent)
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------- #
# Reading text
# --------------------------------------------------------------------------- #
def input_files(path):
    """The text files of one input PATH (a file, or *.txt under a directory)."""
    if os.path.isfile(path):
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".txt"))
    return files


def strip_gutenberg(lines):
    """Keep only the lines between the Project Gutenberg START/END markers."""
    start = next((i for i, ln in enumerate(lines) if PG_START.match(ln)), None)
    if start is None:
        return lines, False
    end = next((i for i in range(start + 1, len(lines)) if PG_END.match(lines[i])), len(lines))
    return lines[start + 1:end], True


def normalize(text):
    """Whitespace collapsed to single spaces: how every line is cleaned before encoding."""
    return " ".join(text.split())


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


def read_documents(path, max_line_chars=0):
    """A text file as documents (lists of non-empty normalized lines), and
    whether Project Gutenberg boilerplate was stripped."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise MetaConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        raise MetaConfigError(f"cannot read {path}: {e.strerror}")
    # Universal newlines turned \r\n and \r into \n; split only on \n (not on
    # the other characters str.splitlines() treats as line breaks).
    lines, stripped = strip_gutenberg(text.split("\n"))
    documents, current = [], []
    for raw in lines:
        line = normalize(raw)
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


# --------------------------------------------------------------------------- #
# sentencepiece
# --------------------------------------------------------------------------- #
def train_spm(lines, model_path, *, vocab_size, model_type="unigram", input_lines=300000,
              seed=1, workers=1, log=_quiet):
    """Train a sentencepiece model on ``lines``, write it to ``model_path``;
    returns the vocabulary size.

    ``hard_vocab_limit=False`` lets a small corpus end with a smaller vocabulary
    instead of failing; if sentencepiece still rejects the size (e.g. for bpe) it
    is lowered to the maximum sentencepiece reports. The model is trained from an
    iterator and written from memory, so it holds no temporary file names and is
    byte-for-byte reproducible.
    """
    import sentencepiece as spm

    while True:
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, model_type=model_type,
                vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=0.9999,
                input_sentence_size=input_lines, shuffle_input_sentence=True,
                max_sentence_length=1 << 16, num_threads=workers, minloglevel=2,
                # Keep <unk> only: fairseq's dictionary adds <s>, <pad>, </s>.
                bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
            )
            break
        except RuntimeError as e:
            match = re.search(r"value <= (\d+)", str(e))
            if not match or int(match.group(1)) >= vocab_size:
                raise MetaConfigError(
                    f"sentencepiece training failed: {str(e).strip().splitlines()[-1]}")
            lowered = int(match.group(1))
            log(f"corpus too small for --vocab-size {vocab_size}; lowering it to {lowered}")
            vocab_size = lowered
    with open(model_path, "wb") as f:
        f.write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


def load_spm(path):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=os.fspath(path))
    except (RuntimeError, OSError) as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise MetaConfigError(f"--spm-model {path}: cannot load sentencepiece model ({reason})")


def write_vocab(sp, path):
    """Write a ``.vocab`` file (piece<TAB>score) for a loaded model."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


class Encoded(Counter):
    """How often each piece was written by :func:`encode_documents`; pieces
    the dictionary lacks become ``<unk>`` in fairseq-preprocess."""

    @property
    def tokens(self):
        return sum(self.values())

    def unk_rate(self, vocabulary):
        unknown = sum(n for piece, n in self.items() if piece not in vocabulary)
        return unknown / self.tokens if self else 0.0


def encode_documents(sp, documents, path, workers=1):
    """Encode documents into space-separated pieces, one line per line and one
    empty line between documents; returns the piece counts."""
    lines = [line for doc in documents for line in doc]
    encoded = iter(sp.encode(lines, out_type=str, num_threads=workers))
    counts = Encoded()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, doc in enumerate(documents):
            if i:
                f.write("\n")
            for _ in doc:
                pieces = next(encoded)
                counts.update(pieces)
                f.write(" ".join(pieces) + "\n")
    return counts


# --------------------------------------------------------------------------- #
# The fairseq dictionary
# --------------------------------------------------------------------------- #
def check_dictionary(path):
    """The symbols of ``path``; one-line error unless it is in fairseq's dict.txt
    format (``<token> <count>`` lines, optionally ``#fairseq:overwrite``).
    Parsed here rather than by ``fairseq.data.Dictionary``: importing fairseq
    takes seconds."""
    symbols = []
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
                    raise MetaConfigError(
                        f"--dict {path}: not a fairseq dictionary (line {number} is not "
                        f"'<token> <count>': {line.strip()[:40]!r})")
                symbols.append(" ".join(fields[:-1]))
    except UnicodeDecodeError:
        raise MetaConfigError(f"--dict {path}: not a fairseq dictionary (not UTF-8 text)")
    except OSError as e:
        raise MetaConfigError(f"--dict {path}: {e.strerror}")
    if not symbols:
        raise MetaConfigError(f"--dict {path} is empty")
    return symbols


def foreign_symbols(sp, symbols):
    """The dictionary symbols that model ``sp`` cannot have produced.

    A dictionary made from text encoded by ``sp`` holds the model's pieces, plus
    runs of characters the model does not cover (sentencepiece passes them
    through as ``<unk>`` pieces), plus fairseq's ``madeupwordNNNN`` padding. A
    symbol that is none of these (not a piece, yet made only of characters the
    model covers) comes from another model.
    """
    unk = sp.unk_id()
    covered = {sp.id_to_piece(i) for i in range(sp.get_piece_size())
               if len(sp.id_to_piece(i)) == 1}
    foreign = []
    for symbol in symbols:
        if re.fullmatch(r"madeupword\d{4}", symbol) or sp.piece_to_id(symbol) != unk:
            continue
        if symbol == sp.id_to_piece(unk):
            continue
        if all(c in covered for c in symbol.replace("\u2581", "")):
            foreign.append(symbol)
    return foreign


def check_spm_matches_dict(sp, spm_path, symbols, dict_path):
    """One-line error unless dictionary ``dict_path`` (its ``symbols``) was made
    with sentencepiece model ``spm_path`` (loaded: ``sp``)."""
    foreign = foreign_symbols(sp, symbols)
    if len(foreign) > MAX_FOREIGN_SYMBOLS * len(symbols):
        examples = " ".join(foreign[:3])
        raise MetaConfigError(
            f"--dict {dict_path} does not belong to --spm-model {spm_path}: "
            f"{len(foreign)} of its {len(symbols)} symbols are not pieces of that model "
            f"(e.g. {examples}); give the dict.txt and spm.model of the same prepare_corpus run")


def unk_rates(counts, vocabulary):
    """{split: share of its pieces that the dictionary lacks} for {split: Encoded}."""
    return {split: c.unk_rate(vocabulary) for split, c in counts.items()}


def format_rates(rates):
    """'train 0.00%, valid 0.12%'."""
    return ", ".join(f"{split} {100 * rate:.2f}%" for split, rate in rates.items())


# --------------------------------------------------------------------------- #
# fairseq-preprocess
# --------------------------------------------------------------------------- #
# fairseq-preprocess (fairseq_cli.preprocess, parsed exactly as the command
# line) for several argument lists in one process: importing fairseq takes
# seconds, so one process per run would dominate small jobs.
PREPROCESS_RUNNER = r"""
import json, logging, sys
from fairseq import options
from fairseq_cli import preprocess
for job in json.loads(sys.argv[1]):
    preprocess.main(options.get_preprocessing_parser().parse_args(job))
    for handler in list(preprocess.logger.handlers):
        if isinstance(handler, logging.FileHandler):  # main() adds one per call
            preprocess.logger.removeHandler(handler)
            handler.close()
"""


def run_preprocess(jobs, workers):
    """Run ``fairseq-preprocess --only-source`` once per argument list in
    ``jobs``, spread over up to ``workers`` processes (each with ``--workers``
    set to its share); on a failure, prints the tool's output and raises."""
    jobs = [list(map(str, job)) for job in jobs]
    n_procs = max(1, min(workers, len(jobs)))
    each = str(max(1, workers // n_procs))
    running = []
    for i in range(n_procs):
        share = [["--only-source", "--workers", each, *job] for job in jobs[i::n_procs]]
        cmd = [sys.executable, "-c", PREPROCESS_RUNNER, json.dumps(share)]
        running.append((share, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failed = []
    for share, proc in running:
        output = proc.communicate()[0]
        if proc.returncode != 0:
            failed.append((share, proc.returncode, output))
    if failed:
        share, code, output = failed[0]
        sys.stderr.write(output[-4000:])
        raise MetaConfigError(f"fairseq-preprocess failed (exit {code}) on one of: "
                              + "; ".join(" ".join(job) for job in share))


# --------------------------------------------------------------------------- #
# Staging
# --------------------------------------------------------------------------- #
def make_stage(parent, name):
    """A hidden, empty directory in ``parent`` to build ``name`` in, with the
    permissions of a normal directory (mkdtemp makes it private)."""
    stage = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    return stage


def move_into_place(stage, dest):
    """Replace ``dest`` (absent, empty or not) by ``stage``."""
    if os.path.isdir(dest):
        shutil.rmtree(dest) if os.listdir(dest) else os.rmdir(dest)
    os.rename(stage, dest)


def check_replaceable(dest, force, what="--destdir"):
    """One-line error unless ``dest`` may be (re)written: absent, empty, or
    non-empty with ``force`` (never /, home, or a directory holding the cwd)."""
    if not os.path.exists(dest):
        return
    named = f"{what} {dest}" if what else dest
    if not os.path.isdir(dest):
        raise MetaConfigError(f"{named} exists and is not a directory")
    if not os.listdir(dest):
        return
    if not force:
        raise MetaConfigError(f"{named} exists and is not empty (use --force to replace it)")
    real = os.path.realpath(dest)
    if (real in (os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~")))
            or is_inside(os.getcwd(), real)):
        raise MetaConfigError(f"--force refuses to replace {dest} (it is /, your home "
                              "directory or contains the current directory)")


# --------------------------------------------------------------------------- #
# prepare_corpus.py
# --------------------------------------------------------------------------- #
def prepare_corpus(corpora, destdir, *, vocab_size=None, spm_model=None, dict_path=None,
                   spm_model_type="unigram", spm_input_lines=300000, valid_fraction=0.02,
                   max_line_chars=0, seed=1, workers=1, tokenizer_from=None, log=_quiet):
    """Raw text to binarized data (the layout of ``scripts/prepare_corpus.py``).

    ``corpora``: [(name, [files])], name None for a single corpus. Returns
    [(name, train docs, valid docs, {split: Encoded}, {split: <unk> rate})].
    ``tokenizer_from``: an imported model directory whose tokenizer and dict.txt
    are used instead of a sentencepiece model (:mod:`.imported_tokenizer`).
    """
    t0 = time.time()
    sp = imported = None
    if tokenizer_from is not None:
        from .imported_tokenizer import ImportedTokenizer

        sp = imported = ImportedTokenizer(tokenizer_from)
        dict_path = imported.dict_path
    elif spm_model is not None:
        sp = load_spm(spm_model)
    if dict_path is not None and imported is None:
        check_spm_matches_dict(sp, spm_model, check_dictionary(dict_path), dict_path)

    # Read, split into documents, hold out validation documents.
    splits, messages = [], []  # messages: printed once all input has been read
    for name, files in corpora:
        documents = []
        for path in files:
            docs, stripped = read_documents(path, max_line_chars)
            if stripped:
                messages.append(f"{path}: kept the text between the Project "
                                "Gutenberg START/END markers")
            documents.extend(docs)
        where = f"corpus {name!r} ({', '.join(files)})" if name else ", ".join(files)
        if not documents:
            raise MetaConfigError(f"no text in {where}")
        if len(documents) < 2:
            raise MetaConfigError(f"only one document (paragraph) in {where}; need at least 2 "
                                  "to split train/valid")
        train, valid = split_train_valid(documents, valid_fraction, seed)
        messages.append(f"{name or 'corpus'}: {len(files)} file(s), {len(documents)} "
                        f"documents ({len(train)} train, {len(valid)} valid)")
        splits.append((name, train, valid))
    for message in messages:
        log(message)
    if sp is not None and vocab_size is not None:
        log(f"--vocab-size {vocab_size} ignored: reusing {spm_model} "
            f"(vocabulary {sp.get_piece_size()})")

    dest = os.path.abspath(destdir)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    stage = make_stage(os.path.dirname(dest), os.path.basename(dest))
    work = os.path.join(stage, "work")
    os.mkdir(work)
    try:
        if imported is not None:
            imported.copy_into(stage)
        elif sp is None:
            lines = [line for _, train, _ in splits for doc in train for line in doc]
            vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
            log(f"training sentencepiece ({spm_model_type}, vocab {vocab_size}) on "
                f"{len(lines)} training lines of {len(splits)} corpus/corpora")
            model_path = os.path.join(stage, "spm.model")
            n = train_spm(lines, model_path, vocab_size=vocab_size, model_type=spm_model_type,
                          input_lines=spm_input_lines, seed=seed, workers=workers, log=log)
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
            counts = {split: encode_documents(sp, docs, os.path.join(sub, f"{split}.txt"), workers)
                      for split, docs in (("train", train), ("valid", valid))}
            stats.append((name, train, valid, counts))
        log(f"encoded all text with {imported.describe() if imported else 'sentencepiece'}")

        # fairseq-preprocess. One corpus without --dict: one call builds dict.txt
        # from its training text. Otherwise every corpus is binarized with
        # --srcdict: the given --dict, or a joint dictionary built first
        # (--dict-only) from the training text of all corpora.
        multi = len(splits) > 1
        srcdict = dict_path
        if srcdict is None and multi:
            joint = os.path.join(work, "joint-train.txt")
            with open(joint, "w", encoding="utf-8") as out:
                for name, *_ in splits:
                    with open(os.path.join(work, name, "train.txt"), encoding="utf-8") as f:
                        shutil.copyfileobj(f, out)
            log("building the joint dictionary with fairseq-preprocess --dict-only")
            run_preprocess([["--trainpref", joint, "--destdir", stage, "--dict-only"]], workers)
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
        run_preprocess(jobs, workers)
        if multi and dict_path is not None:
            # fairseq re-saves the --dict it loads; keep that copy on top too.
            shutil.copyfile(os.path.join(stage, splits[0][0], "dict.txt"),
                            os.path.join(stage, "dict.txt"))
        shutil.rmtree(work)
        vocabulary = set(check_dictionary(os.path.join(stage, "dict.txt")))
        move_into_place(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log(f"done in {time.time() - t0:.1f}s; dictionary: {len(vocabulary)} entries "
        "(+4 special symbols)")
    return [(name, train, valid, counts, unk_rates(counts, vocabulary))
            for name, train, valid, counts in stats]
