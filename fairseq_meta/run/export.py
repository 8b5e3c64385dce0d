"""Using a pre-trained model afterwards: a fairseq hub model directory and a
Hugging Face ``transformers`` export.

``export_hub_model`` turns a training checkpoint (``--task meta_masked_lm`` or
stock ``masked_lm``, RoBERTa architecture) into the directory that
``fairseq.models.roberta.RobertaModel.from_pretrained(DIR)`` loads as it is::

    DIR/model.pt                  weights; config rewritten to fairseq's masked_lm
    DIR/dict.txt                  the training dictionary
    DIR/sentencepiece.bpe.model   the sentencepiece model (the name hub_utils looks for)

The training checkpoint cannot be used that way: its config names this
plugin's task (whose set-up wants the training corpora), a data directory of
the training machine and no BPE (``from_pretrained`` then falls back to GPT-2
BPE files it downloads), and it holds argparse objects that torch >= 2.6
refuses to unpickle by default. ``model.pt`` here holds only tensors and plain
Python values, so it loads with ``torch.load(weights_only=True)``, without
importing this plugin.

``export_huggingface`` writes an ``XLMRobertaForMaskedLM`` and an
``XLMRobertaTokenizer`` whose ids are fairseq's. fairseq's ids are not
sentencepiece's: ``fairseq-preprocess`` orders ``dict.txt`` by frequency,
adds the surface strings of characters sentencepiece does not know (e.g.
``£``) and pads the dictionary with ``madeupword`` entries. So the tokenizer's
Unigram vocabulary is built in ``dict.txt`` order with sentencepiece's scores
(:func:`hf_vocabulary`), not converted from the sentencepiece model.
"""
import json
import os
import shutil
import tempfile
from argparse import Namespace

import torch

from ..errors import MetaConfigError

HUB_CHECKPOINT = "model.pt"
HUB_DICT = "dict.txt"
# fairseq.hub_utils.from_pretrained passes a file of this name as
# --sentencepiece-model
HUB_SPM = "sentencepiece.bpe.model"

# A probe sentence for the check that ends every transformers export.
PROBE = "The <mask> of the world."
MAX_LOGIT_DIFFERENCE = 1e-4


# --------------------------------------------------------------------------- #
# The fairseq hub directory
# --------------------------------------------------------------------------- #
def load_training_checkpoint(path):
    """A training checkpoint, loaded the way fairseq loads it (config as a DictConfig)."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise MetaConfigError(f"checkpoint not found: {path}")
    try:
        return checkpoint_utils.load_checkpoint_to_cpu(path)
    except MetaConfigError:
        raise
    except Exception as e:  # a truncated file, not a checkpoint, ...
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise MetaConfigError(
            f"cannot load checkpoint {path}: {type(e).__name__}: {first_line}") from e


def _plain(value):
    """Config values as plain containers: no argparse / omegaconf objects."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # enums and the like: fairseq's configs accept their names


def _masked_lm_task_config(task_cfg):
    """fairseq's ``masked_lm`` config with the inference-relevant values of ``task_cfg``."""
    import dataclasses

    from fairseq.tasks.masked_lm import MaskedLMConfig

    names = {f.name for f in dataclasses.fields(MaskedLMConfig)}
    cfg = {k: v for k, v in task_cfg.items() if k in names}
    # from_pretrained points data at the model directory; "." is that directory
    # for fairseq.hub_utils.from_pretrained.
    cfg.update(_name="masked_lm", data=".")
    return cfg


def check_roberta(state, path="checkpoint"):
    """Raise unless ``state`` holds a RoBERTa masked-LM encoder."""
    model = state.get("model") or {}
    for key in ("encoder.sentence_encoder.embed_tokens.weight", "encoder.lm_head.weight",
                "encoder.lm_head.bias"):
        if key not in model:
            arch = _plain(state["cfg"]["model"]).get("arch") if state.get("cfg") else None
            raise MetaConfigError(
                f"{path} is not a RoBERTa masked-LM checkpoint (no {key}; arch {arch!r}): "
                "only --arch roberta_* models can be exported"
            )


def hub_state(state):
    """The checkpoint that ``RobertaModel.from_pretrained`` loads, from a training one.

    Weights unchanged; the config rewritten so that nothing names the plugin or
    the training data: task ``masked_lm`` reading ``dict.txt`` from the model
    directory, criterion ``masked_lm``, sentencepiece BPE, no user dir. The
    optimizer state, the data iterator position and the meters are dropped.
    """
    check_roberta(state)
    cfg = _plain(state["cfg"])
    cfg["common"]["user_dir"] = None
    cfg["task"] = _masked_lm_task_config(cfg["task"])
    cfg["criterion"] = {"_name": "masked_lm"}
    cfg["optimizer"] = None
    cfg["lr_scheduler"] = None
    cfg["bpe"] = {"_name": "sentencepiece", "sentencepiece_model": HUB_SPM}
    cfg["tokenizer"] = None
    model = cfg["model"]
    # from_pretrained asks for the checkpoint's classification heads (e.g. the NSP
    # head) through this key, but fairseq only overrides keys the config has.
    model["load_checkpoint_heads"] = True
    # cfg.model of a command-line run is the whole argparse namespace.
    for key, value in (("user_dir", None), ("data", "."), ("task", "masked_lm"),
                       ("criterion", "masked_lm"), ("optimizer", None),
                       ("lr_scheduler", None), ("bpe", "sentencepiece"),
                       ("tokenizer", None), ("restore_file", None), ("save_dir", None),
                       ("tensorboard_logdir", None)):
        if key in model:
            model[key] = value
    last = (state.get("optimizer_history") or [{}])[-1]
    return {
        "args": None,
        "cfg": cfg,
        "model": {k: v.detach().clone() for k, v in state["model"].items()},
        "optimizer_history": [{
            "criterion_name": "MaskedLmLoss",
            "optimizer_name": None,
            "lr_scheduler_state": {"best": None},
            "num_updates": int(last.get("num_updates", 0)),
        }],
        "extra_state": {},
    }


def data_dir_of(state):
    """The (first) training data directory named in a checkpoint's config."""
    data = _plain(state["cfg"]["task"]).get("data")
    return data.split(os.pathsep)[0] if data else None


def load_dictionary(path, n_embeddings=None):
    """fairseq's dictionary for ``path`` with ``<mask>`` added, as masked_lm builds it."""
    from fairseq.data import Dictionary

    if not os.path.isfile(path):
        raise MetaConfigError(f"dictionary not found: {path}")
    try:
        dictionary = Dictionary.load(path)
    except Exception as e:
        raise MetaConfigError(f"{path} is not a fairseq dictionary ({e})") from e
    dictionary.add_symbol("<mask>")
    if n_embeddings is not None and len(dictionary) != n_embeddings:
        raise MetaConfigError(
            f"dictionary {path} gives {len(dictionary)} symbols with <mask>, but the "
            f"checkpoint has {n_embeddings} embeddings: pass the dict.txt it was trained with"
        )
    return dictionary


def check_spm_model(path):
    """Raise unless sentencepiece can load ``path``."""
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise MetaConfigError(f"{path} is not a sentencepiece model ({type(e).__name__})") from e


def load_spm_proto(path):
    """The sentencepiece model's protobuf (scores, normalizer, trainer settings)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
    except FileNotFoundError:
        raise MetaConfigError(f"sentencepiece model not found: {path}") from None
    except Exception as e:
        raise MetaConfigError(f"{path} is not a sentencepiece model ({type(e).__name__})") from e
    if not proto.pieces:
        raise MetaConfigError(f"{path} is not a sentencepiece model (no pieces)")
    return proto


def resolve_inputs(state, spm_model=None, dictionary=None):
    """``--spm-model`` and ``--dict``, by default those of the training data
    directory (``spm.model`` and ``dict.txt``, as scripts/prepare_corpus.py writes)."""
    data = data_dir_of(state)
    found = []
    for given, name, flag in ((spm_model, "spm.model", "--spm-model"),
                              (dictionary, "dict.txt", "--dict")):
        if given is None:
            if data is None or not os.path.isfile(os.path.join(data, name)):
                raise MetaConfigError(
                    f"no {name} in the checkpoint's data directory {data!r}: give {flag}")
            given = os.path.join(data, name)
        elif not os.path.isfile(given):
            raise MetaConfigError(f"{flag} not found: {given}")
        found.append(given)
    return found


def _prepare_out_dir(out_dir, force):
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise MetaConfigError(f"{out_dir} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise MetaConfigError(f"{out_dir} exists and is not empty (use --force to replace it)")


def _stage(out_dir):
    """A temporary directory next to ``out_dir``: a failed export leaves nothing."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(out_dir))
    return tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)


def _publish(stage, out_dir):
    # mkdtemp (and some writers) create private files; give them the umask's modes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    for name in os.listdir(stage):
        os.chmod(os.path.join(stage, name), 0o666 & ~umask)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.rename(stage, out_dir)


def export_hub_model(checkpoint, out_dir, spm_model=None, dictionary=None, force=False,
                     state=None):
    """Write the fairseq hub directory for ``checkpoint`` to ``out_dir``; return its path."""
    _prepare_out_dir(out_dir, force)
    if state is None:
        state = load_training_checkpoint(checkpoint)
    check_roberta(state, checkpoint)
    spm_model, dictionary = resolve_inputs(state, spm_model, dictionary)
    check_spm_model(spm_model)
    embeddings = state["model"]["encoder.sentence_encoder.embed_tokens.weight"]
    load_dictionary(dictionary, embeddings.shape[0])
    stage = _stage(out_dir)
    try:
        torch.save(hub_state(state), os.path.join(stage, HUB_CHECKPOINT))
        shutil.copyfile(dictionary, os.path.join(stage, HUB_DICT))
        shutil.copyfile(spm_model, os.path.join(stage, HUB_SPM))
        _publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out_dir


def load_hub_model(model_dir):
    """``RobertaModel.from_pretrained(model_dir)`` in eval mode (what README shows)."""
    from fairseq.models.roberta import RobertaModel

    roberta = RobertaModel.from_pretrained(os.path.abspath(model_dir))
    roberta.eval()
    return roberta


# --------------------------------------------------------------------------- #
# Hugging Face transformers
# --------------------------------------------------------------------------- #
def _require_transformers():
    try:
        import transformers
        from transformers import XLMRobertaForMaskedLM  # noqa: F401  (imports its backends)
    except ImportError:
        raise MetaConfigError(
            "the Hugging Face export needs transformers: pip install -e '.[export]'"
        ) from None
    except OSError as e:
        # e.g. a torchaudio built for another torch, which transformers imports
        raise MetaConfigError(f"transformers fails to import: {str(e).splitlines()[0]} "
                              "(scripts/setup_env.sh removes a torchaudio that cannot load)"
                              ) from e
    transformers.utils.logging.disable_progress_bar()


def hf_vocabulary(proto, dictionary):
    """The tokenizer's Unigram vocabulary: fairseq's symbols in fairseq's order.

    A dictionary symbol that is a sentencepiece piece keeps its sentencepiece
    score, so the Viterbi segmentation is sentencepiece's. Every other symbol
    (``<mask>`` and the four specials, which the tokenizer matches before the
    Unigram model; surface strings of characters sentencepiece does not know;
    ``madeupword`` padding) gets the lowest piece score: that keeps the
    penalty of unknown characters (lowest score - 10) where sentencepiece has
    it, and makes a run of such characters one token, as sentencepiece emits it.

    Returns ``(vocab, pieces_not_in_dictionary)``.
    """
    normal = {p.piece: p.score for p in proto.pieces if p.type == p.NORMAL}
    lowest = min(normal.values())
    specials = {dictionary.bos_word, dictionary.pad_word, dictionary.eos_word,
                dictionary.unk_word, "<mask>"}
    vocab = []
    for symbol in dictionary.symbols:
        score = 0.0 if symbol in specials else normal.get(symbol, lowest)
        vocab.append((symbol, float(score)))
    missing = sorted(set(normal) - set(dictionary.symbols))
    return vocab, missing


def check_spm_fits_xlmr(proto, path):
    """Raise unless transformers' XLM-R tokenizer pipeline can reproduce ``proto``."""
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    problems = []
    if trainer.model_type != trainer.UNIGRAM:
        model_type = trainer.ModelType.Name(trainer.model_type).lower()
        problems.append(f"model type {model_type} (needs unigram)")
    if trainer.byte_fallback:
        problems.append("byte fallback")
    if trainer.split_digits:
        problems.append("split digits")
    if trainer.treat_whitespace_as_suffix or not trainer.split_by_whitespace:
        problems.append("non-default whitespace handling")
    if any(p.type == p.USER_DEFINED for p in proto.pieces):
        problems.append("user-defined symbols")
    if not normalizer.remove_extra_whitespaces:
        problems.append("remove_extra_whitespaces off")
    if problems:
        raise MetaConfigError(
            f"{path}: cannot be expressed as an XLM-R tokenizer ({', '.join(problems)})")


def build_hf_tokenizer(spm_model, dictionary_path, max_positions=None):
    """An ``XLMRobertaTokenizer`` whose ids are fairseq's for this dictionary."""
    _require_transformers()
    from transformers import XLMRobertaTokenizer

    proto = load_spm_proto(spm_model)
    check_spm_fits_xlmr(proto, spm_model)
    dictionary = load_dictionary(dictionary_path)
    vocab, missing = hf_vocabulary(proto, dictionary)
    charsmap = proto.normalizer_spec.precompiled_charsmap or None
    kwargs = {"model_max_length": max_positions} if max_positions else {}
    tokenizer = XLMRobertaTokenizer(
        vocab=vocab, _spm_precompiled_charsmap=charsmap,
        add_prefix_space=proto.normalizer_spec.add_dummy_prefix, **kwargs)
    return tokenizer, missing


def hf_config(model_cfg, state_dict):
    """``XLMRobertaConfig`` for a fairseq RoBERTa (post-LN, learned positions, GELU)."""
    from transformers import XLMRobertaConfig

    unsupported = []
    if model_cfg.get("encoder_normalize_before"):
        unsupported.append("encoder_normalize_before (pre-LN)")
    if not model_cfg.get("layernorm_embedding", True):
        unsupported.append("no layernorm_embedding")
    if model_cfg.get("activation_fn", "gelu") != "gelu":
        unsupported.append(f"activation_fn {model_cfg.get('activation_fn')}")
    if (not model_cfg.get("encoder_learned_pos", True)
            or model_cfg.get("no_token_positional_embeddings")):
        unsupported.append("no learned positional embeddings")
    if not model_cfg.get("no_scale_embedding", True):
        unsupported.append("scaled embeddings")
    if unsupported:
        raise MetaConfigError(
            f"this RoBERTa variant has no transformers XLM-R equivalent: {', '.join(unsupported)}")
    prefix = "encoder.sentence_encoder."
    n_embeddings, dim = state_dict[prefix + "embed_tokens.weight"].shape
    n_layers = 1 + max(int(k[len(prefix + "layers."):].split(".")[0])
                       for k in state_dict if k.startswith(prefix + "layers."))
    return XLMRobertaConfig(
        vocab_size=n_embeddings,
        hidden_size=dim,
        num_hidden_layers=n_layers,
        num_attention_heads=model_cfg["encoder_attention_heads"],
        intermediate_size=state_dict[prefix + "layers.0.fc1.weight"].shape[0],
        hidden_act="gelu",
        max_position_embeddings=state_dict[prefix + "embed_positions.weight"].shape[0],
        type_vocab_size=1,
        # fairseq's LayerNorm default, or what --arch imported_roberta carries
        layer_norm_eps=float(model_cfg.get("layernorm_eps", 1e-5)),
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
        tie_word_embeddings=not model_cfg.get("untie_weights_roberta", False),
    )


def _fairseq_name(hf_name):
    """The fairseq state-dict key of a transformers ``XLMRobertaForMaskedLM`` parameter,
    or None for the token-type embedding fairseq does not have."""
    enc = "encoder.sentence_encoder."
    fixed = {
        "roberta.embeddings.word_embeddings.weight": enc + "embed_tokens.weight",
        "roberta.embeddings.position_embeddings.weight": enc + "embed_positions.weight",
        "roberta.embeddings.token_type_embeddings.weight": None,
        "roberta.embeddings.LayerNorm.weight": enc + "layernorm_embedding.weight",
        "roberta.embeddings.LayerNorm.bias": enc + "layernorm_embedding.bias",
        "lm_head.dense.weight": "encoder.lm_head.dense.weight",
        "lm_head.dense.bias": "encoder.lm_head.dense.bias",
        "lm_head.layer_norm.weight": "encoder.lm_head.layer_norm.weight",
        "lm_head.layer_norm.bias": "encoder.lm_head.layer_norm.bias",
        "lm_head.decoder.weight": "encoder.lm_head.weight",
        "lm_head.decoder.bias": "encoder.lm_head.bias",
        "lm_head.bias": "encoder.lm_head.bias",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    layer = {
        "attention.self.query": "self_attn.q_proj",
        "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "self_attn_layer_norm",
        "intermediate.dense": "fc1",
        "output.dense": "fc2",
        "output.LayerNorm": "final_layer_norm",
    }
    parts = hf_name.split(".")
    if parts[:3] == ["roberta", "encoder", "layer"]:
        module = ".".join(parts[4:-1])
        if module in layer:
            return f"{enc}layers.{parts[3]}.{layer[module]}.{parts[-1]}"
    raise MetaConfigError(f"no fairseq weight for transformers parameter {hf_name}")


def hf_state_dict(hf_model, fairseq_state):
    """The fairseq weights under ``hf_model``'s parameter names."""
    out = {}
    for name, tensor in hf_model.state_dict().items():
        source = _fairseq_name(name)
        out[name] = torch.zeros_like(tensor) if source is None else fairseq_state[source].clone()
        if out[name].shape != tensor.shape:
            raise MetaConfigError(
                f"shape mismatch for {name}: fairseq {tuple(out[name].shape)} vs "
                f"transformers {tuple(tensor.shape)}")
    return out


def export_huggingface(model_dir, out_dir, force=False):
    """Write ``XLMRobertaForMaskedLM`` + tokenizer for the hub directory ``model_dir``.

    Ends with a check: the fairseq hub model and the exported model must give
    the same logits (to 1e-4) on a probe sentence. Returns
    ``(out_dir, max_abs_logit_difference, pieces_not_in_dictionary)``.
    """
    _require_transformers()
    _prepare_out_dir(out_dir, force)
    model = _hf_model(model_dir)
    tokenizer, missing = build_hf_tokenizer(
        os.path.join(model_dir, HUB_SPM), os.path.join(model_dir, HUB_DICT),
        max_positions=model.config.max_position_embeddings - 2)
    return out_dir, _check_and_write(model_dir, model, tokenizer, out_dir), missing


def _hf_model(model_dir):
    """``XLMRobertaForMaskedLM`` (eval mode) holding the hub directory's weights."""
    from transformers import XLMRobertaForMaskedLM

    state = torch.load(os.path.join(model_dir, HUB_CHECKPOINT), map_location="cpu",
                       weights_only=True)
    model = XLMRobertaForMaskedLM(hf_config(state["cfg"]["model"], state["model"]))
    result = model.load_state_dict(hf_state_dict(model, state["model"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    return model.eval()


def _check_and_write(model_dir, model, tokenizer, out_dir):
    """The logit check against the fairseq hub model, then model + tokenizer
    written through a stage directory; returns the max |logit difference|."""
    difference = max_logit_difference(load_hub_model(model_dir), model, tokenizer, [PROBE])
    if not difference <= MAX_LOGIT_DIFFERENCE:
        raise MetaConfigError(
            f"the exported model's logits differ from fairseq's by {difference:.3g} "
            f"(> {MAX_LOGIT_DIFFERENCE}) on a probe sentence; not written")
    stage = _stage(out_dir)
    try:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        _publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return difference


def _renumber_post_processor(processor, ids):
    """The special tokens' ids of a tokenizer.json post-processor, in fairseq's ids."""
    if not processor:
        return
    kind = processor.get("type")
    if kind == "Sequence":
        for p in processor.get("processors", []):
            _renumber_post_processor(p, ids)
    elif kind in ("BertProcessing", "RobertaProcessing"):  # sep / cls: [token, id]
        for name in ("sep", "cls"):
            processor[name] = [processor[name][0], ids[processor[name][0]]]
    for special in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
        special["ids"] = [ids[t] for t in special["tokens"]]


def build_imported_tokenizer(tokenizer_json, dictionary, model_type="bert"):
    """The imported model's own ``tokenizer.json`` (normalizer, pre-tokenizer, its
    WordPiece, byte-level BPE or unigram model) with every id renumbered to
    fairseq's (*dictionary*'s order, the specials at fairseq's ids), as a
    transformers fast tokenizer. WordPiece / BPE tokens the dictionary lacks are
    dropped (fairseq maps them to <unk>); a unigram model's pieces are reordered,
    so every one must be in the dictionary (an import's always are)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from .import_model import FAMILIES

    family = FAMILIES[model_type]
    spelling = {**family["specials"], "<mask>": family["mask"]}  # fairseq's -> the source's
    with open(tokenizer_json, encoding="utf-8") as f:
        spec = json.load(f)
    ids = {spelling.get(symbol, symbol): i for i, symbol in enumerate(dictionary.symbols)}
    model = spec["model"]
    if isinstance(model["vocab"], list):  # unigram: [[piece, score], ...], position = id
        score = {piece: value for piece, value in model["vocab"]}
        if set(score) - set(ids):
            raise MetaConfigError(f"{tokenizer_json}: {len(set(score) - set(ids))} unigram pieces "
                                  "are not in dict.txt; not an imported model's tokenizer")
        by_id = sorted((i, token) for token, i in ids.items() if token in score)
        if [i for i, _ in by_id] != list(range(len(by_id))):
            raise MetaConfigError(f"{tokenizer_json}: dict.txt holds symbols the unigram model lacks")
        model["vocab"] = [[token, score[token]] for _, token in by_id]
        if model.get("unk_id") is not None:
            model["unk_id"] = ids[family["specials"]["<unk>"]]
    else:
        model["vocab"] = {token: ids[token] for token in model["vocab"] if token in ids}
    for token in spec.get("added_tokens", []):
        token["id"] = ids[token["content"]]
    _renumber_post_processor(spec.get("post_processor"), ids)
    spec["padding"] = spec["truncation"] = None
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    s = family["specials"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=s["<unk>"], cls_token=s["<s>"], sep_token=s["</s>"],
        pad_token=s["<pad>"], mask_token=family["mask"],
        **({} if model_type == "bert" else {"bos_token": s["<s>"], "eos_token": s["</s>"]}))


def export_imported_huggingface(model_dir, out_dir, force=False):
    """A directory of scripts/import_model.py as transformers ``XLMRobertaForMaskedLM``
    (fairseq's RoBERTa layout, post-LN, its LayerNorm eps) + the source's tokenizer in
    fairseq's ids (:func:`build_imported_tokenizer`); the same logit check as
    :func:`export_huggingface`. Returns ``(out_dir, max_abs_logit_difference, kind)``
    (``kind``: the tokenizer's model, WordPiece, BPE or Unigram)."""
    _require_transformers()
    from fairseq.data import Dictionary

    import fairseq_meta  # noqa: F401  (--arch imported_roberta, --bpe hf_tokenizer)

    from .import_model import FAMILIES

    with open(os.path.join(model_dir, "import.json"), encoding="utf-8") as f:
        model_type = json.load(f).get("model_type", "bert")
    if model_type not in FAMILIES:
        raise MetaConfigError(f"{model_dir}/import.json: unknown model_type {model_type!r}")
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        kind = (json.load(f).get("model") or {}).get("type")
    _prepare_out_dir(out_dir, force)
    model = _hf_model(model_dir)
    dictionary = Dictionary.load(os.path.join(model_dir, HUB_DICT))
    dictionary.add_symbol("<mask>")  # as the masked-LM task does when it loads the model
    tokenizer = build_imported_tokenizer(os.path.join(model_dir, "tokenizer.json"), dictionary,
                                         model_type)
    tokenizer.model_max_length = model.config.max_position_embeddings - 2
    return out_dir, _check_and_write(model_dir, model, tokenizer, out_dir), kind


def is_imported_model_dir(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "import.json"))


def max_logit_difference(roberta, hf_model, tokenizer, sentences):
    """Largest |fairseq logit - transformers logit| over ``sentences``, each
    encoded by both sides; raises if the two tokenizations differ."""
    worst = 0.0
    for sentence in sentences:
        # fairseq's fill_mask encodes around "<mask>" the same way.
        spans = sentence.split("<mask>")
        bpe = " <mask> ".join(roberta.bpe.encode(s.rstrip()) for s in spans).strip()
        tokens = roberta.task.source_dictionary.encode_line(
            "<s> " + bpe + " </s>", append_eos=False, add_if_not_exist=False).long()
        # the exported tokenizer's own mask token (XLM-R: <mask>; WordPiece: [MASK])
        ids = tokenizer(sentence.replace("<mask>", tokenizer.mask_token), return_tensors="pt")["input_ids"]
        if ids[0].tolist() != tokens.tolist():
            raise MetaConfigError(
                f"the exported tokenizer does not reproduce fairseq's ids for {sentence!r}")
        with torch.no_grad():
            ours = roberta.model(tokens.unsqueeze(0))[0]
            theirs = hf_model(input_ids=ids).logits
        worst = max(worst, (ours - theirs).abs().max().item())
    return worst


def export(checkpoint, out_dir, spm_model=None, dictionary=None, huggingface=None,
           force=False, log=print):
    """scripts/export_model.py: the hub directory, then optionally the transformers model.

    Every input is checked before anything is written.
    """
    if is_imported_model_dir(checkpoint):
        # already a fairseq model directory: only the transformers export is left
        if huggingface is None:
            raise MetaConfigError(f"{checkpoint} is an imported model directory (already what "
                                  "--out-dir would hold); give --huggingface DIR")
        _, difference, kind = export_imported_huggingface(checkpoint, huggingface, force=force)
        log(f"transformers model: {huggingface} (XLMRobertaForMaskedLM + its {kind} tokenizer "
            f"in fairseq's ids; max |logit difference| to fairseq on a probe sentence: {difference:.2g})")
        return
    if out_dir is None:
        raise MetaConfigError("--out-dir is required for a training checkpoint")
    _prepare_out_dir(out_dir, force)
    state = load_training_checkpoint(checkpoint)
    check_roberta(state, checkpoint)
    spm_model, dictionary = resolve_inputs(state, spm_model, dictionary)
    if huggingface is not None:
        if os.path.abspath(huggingface) == os.path.abspath(out_dir):
            raise MetaConfigError("--huggingface must be another directory than --out-dir")
        _require_transformers()
        _prepare_out_dir(huggingface, force)
        check_spm_fits_xlmr(load_spm_proto(spm_model), spm_model)
        hf_config(_plain(state["cfg"]["model"]), state["model"])
    export_hub_model(checkpoint, out_dir, spm_model, dictionary, force=force, state=state)
    log(f"fairseq model directory: {out_dir} ({HUB_CHECKPOINT}, {HUB_DICT}, {HUB_SPM}); "
        f"load it with RobertaModel.from_pretrained({str(out_dir)!r})")
    if huggingface is not None:
        _, difference, missing = export_huggingface(out_dir, huggingface, force=force)
        if missing:
            log(f"note: {len(missing)} sentencepiece piece(s) never occur in the training "
                f"text (not in dict.txt; fairseq maps them to <unk>), e.g. {missing[:5]}; "
                "the exported tokenizer segments text that needs them differently")
        log(f"transformers model: {huggingface} (XLMRobertaForMaskedLM + XLMRobertaTokenizer; "
            f"max |logit difference| to fairseq on a probe sentence: {difference:.2g})")
