"""The tokenizer of a model directory that ``scripts/import_model.py`` wrote, as
``prepare_corpus.py`` and ``prepare_glue.py`` encode with it (``--tokenizer-from``).

The directory holds the source's ``tokenizer.json`` (WordPiece, through the
``tokenizers`` library) and the fairseq ``dict.txt`` whose symbols are that
vocabulary's tokens. Text is encoded without special tokens, padding or
truncation (fairseq adds ``<s>``/``</s>`` and cuts blocks itself); the tokens are
written space-separated and binarized with ``--srcdict dict.txt``, so corpora and
GLUE tasks share the model's vocabulary and ids.
"""
import json
import os
import shutil

from ..errors import MetaConfigError

# Files copied beside the binarized data: fairseq's ``bert`` BPE finds its
# vocabulary in the data directory (``bpe_vocab_file: ${task.data}/vocab.txt``).
FILES = ("tokenizer.json", "vocab.txt")
RECORD = "tokenizer.from.json"
# fairseq's own symbols, which the source vocabulary spells differently.
FAIRSEQ_SPECIALS = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}


def check_flags(model_dir, given):
    """One-line refusal of ``--tokenizer-from`` beside the flags it replaces
    (*given*: flag -> value, None when not given) or of a path that is no directory."""
    given = [flag for flag, value in given.items() if value is not None]
    if given:
        raise MetaConfigError(
            f"--tokenizer-from brings its own tokenizer and dictionary; drop {', '.join(given)}")
    if not os.path.isdir(model_dir):
        raise MetaConfigError(f"--tokenizer-from {model_dir}: not a directory")


class ImportedTokenizer:
    """*model_dir*: an imported model directory, or data prepared with its tokenizer
    (which holds the same files); *dict_path*: another dict.txt to check it against
    (*symbols*: its symbols, when the caller has read them already); *where*: how the
    errors name the tokenizer (default: the ``--tokenizer-from`` flag that gave it)."""

    def __init__(self, model_dir, dict_path=None, symbols=None, where=None):
        self.model_dir = os.path.abspath(model_dir)
        self.dict_path = os.path.abspath(dict_path or os.path.join(self.model_dir, "dict.txt"))
        self.where = where or f"--tokenizer-from {model_dir}"
        for name in ("tokenizer.json", "vocab.txt"):
            if not os.path.isfile(os.path.join(self.model_dir, name)):
                raise MetaConfigError(
                    f"{self.where}: no {name} in {self.model_dir} (not a directory written by "
                    "scripts/import_model.py)")
        if symbols is None and not os.path.isfile(self.dict_path):
            raise MetaConfigError(f"{self.where}: no dictionary {self.dict_path}")
        from tokenizers import Tokenizer

        path = os.path.join(self.model_dir, "tokenizer.json")
        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as e:  # tokenizers raises its own Exception type
            raise MetaConfigError(f"{self.where}: cannot load tokenizer.json ({e})")
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._check_matches_dict(symbols)

    def _check_matches_dict(self, symbols):
        from .corpus import check_dictionary

        vocabulary = self.tokenizer.get_vocab()
        self.symbols = symbols = check_dictionary(self.dict_path) if symbols is None else symbols
        foreign = [s for s in symbols if s not in vocabulary and s not in FAIRSEQ_SPECIALS
                   and not s.startswith("madeupword")]
        if foreign or len(symbols) < 0.99 * len(vocabulary) - len(FAIRSEQ_SPECIALS):
            example = f", e.g. {foreign[0]!r}" if foreign else ""
            raise MetaConfigError(
                f"{self.where}: tokenizer.json does not match the dictionary "
                f"{self.dict_path} "
                f"({len(foreign)} dictionary symbols not in its vocabulary of {len(vocabulary)}"
                f"{example}); re-run scripts/import_model.py")

    def encode(self, lines, out_type=str, num_threads=1):
        """Token strings per line (the ``SentencePieceProcessor.encode`` call that
        :func:`~fairseq_meta.prep.corpus.encode_documents` makes)."""
        return [e.tokens for e in self.tokenizer.encode_batch(list(lines), add_special_tokens=False)]

    def describe(self):
        return f"the tokenizer of {self.model_dir}"

    def copy_into(self, destdir):
        """The tokenizer files beside the data, and where they came from."""
        for name in FILES:
            shutil.copyfile(os.path.join(self.model_dir, name), os.path.join(destdir, name))
        with open(os.path.join(destdir, RECORD), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_from": self.model_dir, "files": list(FILES)}, f, indent=2)
            f.write("\n")
