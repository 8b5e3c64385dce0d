"""Checkpoints, dictionaries and text for the evaluation: what is checked before
anything runs, and how an encoder is loaded.

A checkpoint to evaluate is a RoBERTa encoder written by ``fairseq-train``
(``meta_masked_lm``, ``meta_sentence_prediction``, stock ``masked_lm``) or
``fairseq-hydra-train``. Its token ids are those of the ``dict.txt`` it was
pre-trained with (plus ``<mask>``, which ``masked_lm`` appends), and text is
encoded with that run's tokenizer: the sentencepiece model of ``prepare_corpus.py``
(``spm.model``) or the ``tokenizer.json`` of a model imported from transformers
(``scripts/import_model.py``, and data prepared ``--tokenizer-from`` it). Both are
found next to the pre-training data the checkpoint names (``cfg.task.data``; an
imported model's ``.`` is its own directory), or given.
"""
import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..prep import corpus
from ..errors import MetaConfigError
from ..run.finetune import EMBED_KEY, _get, check_vocabulary_size, read_pretrained


@dataclass
class Checkpoint:
    """One checkpoint to evaluate, checked."""
    label: str
    path: str
    sha256: str
    num_updates: int
    vocab: int
    model: dict        # sizes and max_positions (fairseq_meta.run.finetune.read_pretrained)
    dict_path: str
    tokenizer: str     # spm.model or tokenizer.json

    def to_dict(self):
        return dict(self.__dict__)


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _data_dirs(state, path):
    cfg = state.get("cfg")
    task_cfg = _get(cfg, "task") if cfg is not None else state.get("args")
    data = _get(task_cfg, "data")
    if not data:
        return []
    dirs = []
    for shard in str(data).split(":"):
        # "." is hub_utils' convention for "the model's own directory" (import_model.py)
        p = Path(path).resolve().parent if shard == "." else Path(shard)
        dirs.append(p)
        if p.is_dir():
            dirs.extend(sorted(q for q in p.iterdir() if q.is_dir()))  # one subdirectory per corpus
    return dirs


def find_vocabulary(state, path):
    """(dict.txt, tokenizer) of the checkpoint's pre-training data, or Nones."""
    dict_path = tokenizer = None
    for d in _data_dirs(state, path):
        if dict_path is None and (d / "dict.txt").is_file():
            dict_path = d / "dict.txt"
        for candidate in (d / "spm.model", d.parent / "spm.model", d / "tokenizer.json",
                          d.parent / "tokenizer.json"):
            if tokenizer is None and candidate.is_file():
                tokenizer = candidate
    return dict_path, tokenizer


def load_tokenizer(tokenizer, dict_path, symbols=None):
    """The text encoder of ``tokenizer`` (spm.model or tokenizer.json), checked against
    ``dict_path`` (*symbols*: its symbols, if read already): anything with
    sentencepiece's ``encode(lines, out_type=str)``."""
    if symbols is None:
        symbols = corpus.check_dictionary(dict_path)
    if Path(tokenizer).name == "tokenizer.json":
        from ..prep.imported_tokenizer import ImportedTokenizer

        return ImportedTokenizer(Path(tokenizer).parent, dict_path, symbols,
                                 where=f"tokenizer {tokenizer}")
    sp = corpus.load_spm(tokenizer)
    corpus.check_spm_matches_dict(sp, tokenizer, symbols, dict_path)
    return sp


def inspect(path, label, dict_path=None, tokenizer=None):
    """A :class:`Checkpoint`, or a one-line :class:`MetaConfigError`: not a
    checkpoint, not a RoBERTa encoder, no dictionary / tokenizer, a tokenizer that
    does not match the dictionary, or a dictionary whose size does not match the
    checkpoint's embeddings."""
    path = Path(path)
    if path.is_dir():
        raise MetaConfigError(f"{path} is a directory, not a checkpoint file")
    if path.is_file():
        import zipfile

        with open(path, "rb") as f:
            first = f.read(1)
        # torch.save writes a zip archive (or, legacy, a pickle: protocol byte 0x80)
        if not zipfile.is_zipfile(path) and first != b"\x80":
            raise MetaConfigError(f"{path} is not a checkpoint (not a file written by torch.save)")
    pre = read_pretrained(path)
    from ..checkpoints import load_checkpoint

    state = load_checkpoint(path)
    found_dict, found_tokenizer = find_vocabulary(state, path)
    dict_path = Path(dict_path) if dict_path else found_dict
    tokenizer = Path(tokenizer) if tokenizer else found_tokenizer
    if dict_path is None or tokenizer is None:
        missing = "dict.txt" if dict_path is None else "spm.model or tokenizer.json"
        raise MetaConfigError(f"{path}: cannot find the pre-training {missing} (looked next to the "
                              "data the checkpoint names); give --dict and --tokenizer")
    symbols = corpus.check_dictionary(dict_path)
    # fairseq's 4 specials + <mask>
    check_vocabulary_size(pre, len(symbols) + 4 + 1, path, dict_path,
                          "give the dict.txt the checkpoint was pre-trained with (--dict)")
    load_tokenizer(tokenizer, dict_path, symbols)
    history = state.get("optimizer_history") or [{}]
    num_updates = int(history[-1].get("num_updates", 0) or 0)
    return Checkpoint(label=label, path=str(path.resolve()), sha256=sha256(path),
                      num_updates=num_updates, vocab=pre["vocab"], model=pre["model"],
                      dict_path=str(Path(dict_path).resolve()),
                      tokenizer=str(Path(tokenizer).resolve()))


def load_dictionary(dict_path):
    from fairseq.data import Dictionary

    dictionary = Dictionary.load(str(dict_path))
    dictionary.add_symbol("<mask>")
    return dictionary


def device_of(model):
    """Where ``model``'s weights are, so where its batches go (--device)."""
    return next(model.parameters()).device


class _Vocab:
    """What RobertaModel.build_model reads from a task."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def model_args(state):
    cfg = state.get("cfg")
    model_cfg = _get(cfg, "model") if cfg is not None else state.get("args")
    if isinstance(model_cfg, argparse.Namespace):
        return argparse.Namespace(**vars(model_cfg))
    if isinstance(model_cfg, dict):  # import_model.py writes plain containers (weights-only load)
        return argparse.Namespace(**model_cfg)
    from omegaconf import OmegaConf

    return argparse.Namespace(**OmegaConf.to_container(model_cfg, resolve=True))


def model_class(args):
    """RobertaModel, or the registered model of the checkpoint's arch (imported_roberta)."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.models.roberta import RobertaModel

    arch = getattr(args, "_name", None) or getattr(args, "arch", None)
    return ARCH_MODEL_REGISTRY.get(arch, RobertaModel)


def load_encoder(checkpoint, dictionary=None):
    """(RobertaModel with the checkpoint's weights, in eval mode; dictionary with <mask>).
    Classification heads of the checkpoint (NSP, supervised tasks) are dropped."""
    from ..checkpoints import load_checkpoint

    state = load_checkpoint(checkpoint.path)
    dictionary = dictionary or load_dictionary(checkpoint.dict_path)
    args = model_args(state)
    args.load_checkpoint_heads = False
    model = model_class(args).build_model(args, _Vocab(dictionary))
    weights = {k: v for k, v in state["model"].items() if not k.startswith("classification_heads.")}
    model.load_state_dict(weights, strict=True)
    if model.encoder.sentence_encoder.embed_tokens.weight.shape[0] != len(dictionary):
        raise MetaConfigError(f"{checkpoint.path}: {EMBED_KEY} does not match {checkpoint.dict_path}")
    model.eval()
    return model, dictionary


def make_untrained(source, out_path, seed=None):
    """Write the untrained initialisation of ``source``'s architecture (fairseq's
    RoBERTa initialisation under the source's seed, or ``seed``) as a checkpoint
    at update 0 with the source's config: the reference point "untrained"."""
    import torch
    from fairseq import utils

    from ..checkpoints import load_checkpoint

    ck = inspect(source, "source")
    state = load_checkpoint(ck.path)
    args = model_args(state)
    cfg = state.get("cfg")
    common = _get(cfg, "common") if cfg is not None else state.get("args")
    seed = int(seed if seed is not None else (_get(common, "seed", 1) or 1))
    utils.set_torch_seed(seed)
    import numpy as np

    np.random.seed(seed)
    model = model_class(args).build_model(args, _Vocab(load_dictionary(ck.dict_path)))
    new = {k: v for k, v in state.items() if k in ("cfg", "args")}
    if isinstance(cfg, dict) and _get(cfg.get("task"), "data") == ".":
        # an imported model's "its own directory": the copy lives elsewhere
        new["cfg"] = {**cfg, "task": {**cfg["task"], "data": str(Path(ck.dict_path).parent)}}
    new["model"] = {k: v for k, v in model.state_dict().items()}
    new["optimizer_history"] = [{"num_updates": 0, "criterion_name": "untrained",
                                 "optimizer_name": "none", "lr_scheduler_state": {}}]
    new["extra_state"] = {"untrained_from": ck.path, "seed": seed}
    new["last_optimizer_state"] = None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save(new, tmp)
    os.replace(tmp, out_path)
    return out_path


# --------------------------------------------------------------------------- #
# Text of a domain, as blocks of token ids
# --------------------------------------------------------------------------- #
def read_text_blocks(path, sp, dictionary, block_tokens):
    """The text file ``path`` (documents as :func:`fairseq_meta.prep.corpus.read_documents`
    reads them) encoded with the pre-training tokenizer (:func:`load_tokenizer`) and dictionary,
    concatenated (an end-of-sentence after each line) and cut into blocks of
    ``block_tokens`` ids, as ``masked_lm`` with ``--sample-break-mode none``; the
    last partial block is dropped. One-line error if the file is unreadable, empty
    or shorter than one block."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise MetaConfigError(f"text file {path} not found")
    documents, _ = corpus.read_documents(path)
    lines = [line for doc in documents for line in doc]
    if not lines:
        raise MetaConfigError(f"text file {path} is empty")
    ids = []
    for pieces in sp.encode(lines, out_type=str):
        ids.extend(dictionary.index(p) for p in pieces)
        ids.append(dictionary.eos())
    n_blocks = len(ids) // block_tokens
    if n_blocks < 1:
        raise MetaConfigError(f"text file {path} holds {len(ids)} tokens, fewer than one block "
                              f"of {block_tokens}")
    blocks = np.asarray(ids[:n_blocks * block_tokens], dtype=np.int64).reshape(n_blocks, block_tokens)
    unk = float(np.mean(blocks == dictionary.unk()))
    return blocks, unk
