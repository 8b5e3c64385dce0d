"""A way in from transformers: a BERT, RoBERTa or XLM-R checkpoint directory as a
fairseq RoBERTa.

``import_model(src, out)`` turns a transformers directory (``config.json``,
``model.safetensors`` or ``pytorch_model.bin``, ``tokenizer.json``) into a fairseq
model directory::

    OUT/model.pt         weights as fairseq's RoBERTa (--arch imported_roberta), config
                         naming fairseq's masked_lm task and a BPE: fairseq's ``bert``
                         for WordPiece, the plugin's ``hf_tokenizer`` (the source's
                         tokenizer.json) for RoBERTa's BPE and XLM-R's unigram model
    OUT/dict.txt         the vocabulary in fairseq's order (see below)
    OUT/vocab.txt        the vocabulary in the source's order (the bert BPE's)
    OUT/tokenizer.json   the source's tokenizer, unchanged
    OUT/model_args.txt   the fairseq-train flags of this architecture (sizes, eps, ...)
    OUT/import.json      what was imported from where, and how

``RobertaModel.from_pretrained(OUT)`` loads it once the plugin is imported
(``import fairseq_meta``, or ``user_dir=`` / ``--user-dir``): the architecture carries
the source's LayerNorm eps, which fairseq's own RoBERTa cannot
(:mod:`fairseq_meta.models.imported_roberta`). Training and fine-tuning start from it
with ``--restore-file OUT/model.pt`` plus ``$(cat OUT/model_args.txt)``.

The mapping:

- **Token rows.** fairseq's dictionary starts with ``<s> <pad> </s> <unk>`` and the
  masked-LM task appends ``<mask>``; BERT's ``[CLS] [PAD] [SEP] [UNK]`` (RoBERTa's and
  XLM-R's own ``<s> <pad> </s> <unk>``) become the first four, ``[MASK]`` (``<mask>``)
  the last, every other token keeps its relative order (``dict.txt``), and the
  embedding rows (and an MLM head's output bias) are permuted the same way.
- **Positions.** fairseq's learned positions start at ``padding_idx + 1`` = 2, BERT's
  at 0: row i + 2 is BERT's row i; RoBERTa and XLM-R count as fairseq does (their
  rows are fairseq's, and max positions is their table's size − 2). Every row gets the
  source's token-type-0 embedding added (every fairseq input is segment 0), so that the
  sum entering the embedding LayerNorm is the source's.
- **Layers.** post-LN, as BERT: query/key/value/output → ``self_attn.{q,k,v,out}_proj``,
  ``attention.output.LayerNorm`` → ``self_attn_layer_norm``, ``intermediate`` / ``output``
  → ``fc1`` / ``fc2``, ``output.LayerNorm`` → ``final_layer_norm``.
- **MLM head.** the source's (``cls.predictions.*`` of a ``BertForMaskedLM``,
  ``lm_head.*`` of a ``RobertaForMaskedLM``) where it has one; else fairseq's freshly initialised head with its output projection tied
  to the input embeddings, as RoBERTa's is (logged, and recorded in import.json).

Nothing is executed from the source: weights are read with safetensors or
``torch.load(weights_only=True)``, configs as JSON. Bad input is one line and
writes nothing.
"""
import json
import os
import shutil

import torch

from ..errors import MetaConfigError
from .export import _prepare_out_dir, _publish, _stage

ACTIVATIONS = {"gelu": "gelu"}  # transformers' name -> fairseq's (both the erf GELU)
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# What differs between the families transformers writes: the weights' prefix, the
# spelling of fairseq's specials and <mask>, the tokenizer models, how far the
# position table is offset from fairseq's, the BPE the hub interface encodes with.
_ROBERTA = dict(prefix="roberta.", specials={s: s for s in FAIRSEQ_SPECIALS}, mask="<mask>",
                position_offset=0, bpe="hf_tokenizer", head="lm_head.")
FAMILIES = {
    "bert": dict(prefix="bert.", specials={"<s>": "[CLS]", "<pad>": "[PAD]", "</s>": "[SEP]",
                                           "<unk>": "[UNK]"},
                 mask="[MASK]", tokenizers=("WordPiece",), position_offset=2, bpe="bert",
                 head="cls.predictions."),
    "roberta": dict(_ROBERTA, tokenizers=("BPE",)),
    "xlm-roberta": dict(_ROBERTA, tokenizers=("Unigram", "BPE")),
}
SUPPORTED = tuple(FAMILIES)
# a probe that the imported model must reproduce (checked before anything is written)
PROBE = "Meta-learning treats pre-training as learning to learn quickly."
MAX_FEATURE_DIFFERENCE = 1e-4


def _quiet(message):
    pass


# --------------------------------------------------------------------------- #
# Reading the source
# --------------------------------------------------------------------------- #
def _read_json(path, missing):
    """The JSON file *path*; one-line errors (*missing* when it does not exist)."""
    if not os.path.isfile(path):
        raise MetaConfigError(missing)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise MetaConfigError(f"{path} is not JSON: {e}") from None


def read_source(src):
    """(config, tokenizer record, state dict) of a transformers BERT, RoBERTa or XLM-R
    directory; the tokenizer record names the family (:data:`FAMILIES`)."""
    if not os.path.isdir(src):
        raise MetaConfigError(f"{src} is not a directory")
    config = _read_json(os.path.join(src, "config.json"),
                        f"{src} is not a transformers model directory (no config.json)")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise MetaConfigError(f"{src}: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(SUPPORTED)})")
    if config.get("hidden_act") not in ACTIVATIONS:
        raise MetaConfigError(f"{src}: hidden_act {config.get('hidden_act')!r} is not supported "
                              f"(supported: {', '.join(ACTIVATIONS)})")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise MetaConfigError(f"{src}: position_embedding_type "
                              f"{config['position_embedding_type']!r} is not supported (absolute)")
    family = FAMILIES[model_type]
    if family["position_offset"] == 0 and config.get("pad_token_id") != 1:
        raise MetaConfigError(f"{src}: pad_token_id {config.get('pad_token_id')!r}; fairseq's "
                              "positions count from padding index 1")
    tokenizer = read_tokenizer(src, model_type)
    if len(tokenizer["vocab"]) != config.get("vocab_size"):
        raise MetaConfigError(
            f"{src}: the tokenizer has {len(tokenizer['vocab'])} tokens but config.json's "
            f"vocab_size is {config.get('vocab_size')}: tokenizer and model do not match")
    state = read_weights(src, family["prefix"])
    embeddings = state.get("embeddings.word_embeddings.weight")
    if embeddings is None:
        raise MetaConfigError(f"{src}: the weights hold no {model_type} embeddings "
                              "(embeddings.word_embeddings.weight)")
    if embeddings.shape[0] != len(tokenizer["vocab"]):
        raise MetaConfigError(f"{src}: {embeddings.shape[0]} embedding rows for "
                              f"{len(tokenizer['vocab'])} tokenizer tokens")
    return config, tokenizer, state


def read_tokenizer(src, model_type="bert"):
    """The vocabulary ({token: id}), casing and family of ``tokenizer.json``."""
    family = FAMILIES[model_type]
    path = os.path.join(src, "tokenizer.json")
    record = _read_json(path, f"{src}: no tokenizer.json (the import needs the model's tokenizer)")
    model = record.get("model") or {}
    if model.get("type") not in family["tokenizers"]:
        raise MetaConfigError(f"{path}: a {model.get('type')!r} tokenizer; a {model_type} import "
                              f"needs {' or '.join(family['tokenizers'])}")
    vocab = model.get("vocab") or {}
    if isinstance(vocab, list):  # unigram: [[piece, score], ...] in id order
        vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
    for added in record.get("added_tokens") or []:  # specials that live outside the model
        vocab.setdefault(added["content"], added["id"])
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise MetaConfigError(f"{path}: token ids are not 0..{len(ids) - 1}")
    missing = [t for t in (*family["specials"].values(), family["mask"]) if t not in vocab]
    if missing:
        raise MetaConfigError(f"{path}: no {', '.join(missing)} token")
    bad = [t for t in vocab if not t or any(c.isspace() for c in t)]
    if bad:
        raise MetaConfigError(f"{path}: {len(bad)} tokens hold whitespace (e.g. {bad[0]!r}); "
                              "fairseq's dictionary cannot")
    normalizer = record.get("normalizer") or {}
    lowercase = bool(normalizer.get("lowercase", False))
    return {"vocab": vocab, "lowercase": lowercase, "path": path, "family": model_type}


def read_weights(src, prefix="bert."):
    """The state dict, without executing anything; the family's prefix (``bert.``,
    ``roberta.``) removed."""
    safetensors = os.path.join(src, "model.safetensors")
    pickle = os.path.join(src, "pytorch_model.bin")
    if os.path.isfile(safetensors):
        from safetensors.torch import load_file

        state = load_file(safetensors)
    elif os.path.isfile(pickle):
        try:
            state = torch.load(pickle, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MetaConfigError(f"{pickle}: not a weights-only state dict "
                                  f"({type(e).__name__})") from None
    else:
        raise MetaConfigError(f"{src}: no model.safetensors or pytorch_model.bin")
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


# --------------------------------------------------------------------------- #
# The mapping
# --------------------------------------------------------------------------- #
def fairseq_order(vocab, model_type="bert"):
    """Source token ids in fairseq's dictionary order: <s> <pad> </s> <unk>, the rest
    in their own order, <mask> last. Returns (permutation, dict.txt symbols)."""
    family = FAMILIES[model_type]
    by_id = sorted(vocab, key=vocab.get)
    first = [vocab[family["specials"][s]] for s in FAIRSEQ_SPECIALS]
    mask = vocab[family["mask"]]
    skip = set(first) | {mask}
    rest = [vocab[t] for t in by_id if vocab[t] not in skip]
    return first + rest + [mask], [by_id[i] for i in rest]


def max_positions(config):
    """fairseq's --max-positions: BERT's table size, RoBERTa's less its 2 offset rows."""
    return config["max_position_embeddings"] - (2 - FAMILIES[config["model_type"]]["position_offset"])


def fairseq_args(config, tokenizer):
    """The fairseq-train flags the architecture implies (what model_args.txt holds)."""
    return ["--arch", "imported_roberta",
            "--encoder-layers", config["num_hidden_layers"],
            "--encoder-embed-dim", config["hidden_size"],
            "--encoder-ffn-embed-dim", config["intermediate_size"],
            "--encoder-attention-heads", config["num_attention_heads"],
            "--max-positions", max_positions(config),
            "--activation-fn", ACTIVATIONS[config["hidden_act"]],
            "--layernorm-eps", config.get("layer_norm_eps", 1e-12)]


def mapped_weights(config, state, permutation):
    """{fairseq key: tensor} of the encoder (and of the MLM head where the source has one)."""
    def take(key):
        if key not in state:
            raise MetaConfigError(f"the source has no {key}")
        return state[key].float()

    family = FAMILIES[config["model_type"]]
    perm = torch.tensor(permutation)
    enc = "encoder.sentence_encoder."
    words = take("embeddings.word_embeddings.weight")[perm]
    positions = take("embeddings.position_embeddings.weight")
    type0 = (take("embeddings.token_type_embeddings.weight")[0]
             if "embeddings.token_type_embeddings.weight" in state else 0)
    offset = family["position_offset"]
    fairseq_positions = torch.zeros(positions.shape[0] + offset, positions.shape[1])
    fairseq_positions[offset:] = positions + type0
    out = {enc + "embed_tokens.weight": words,
           enc + "embed_positions.weight": fairseq_positions,
           enc + "layernorm_embedding.weight": take("embeddings.LayerNorm.weight"),
           enc + "layernorm_embedding.bias": take("embeddings.LayerNorm.bias")}
    names = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
             "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
             "attention.output.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
             "output.dense": "fc2", "output.LayerNorm": "final_layer_norm"}
    for i in range(config["num_hidden_layers"]):
        for src, dst in names.items():
            for p in ("weight", "bias"):
                out[f"{enc}layers.{i}.{dst}.{p}"] = take(f"encoder.layer.{i}.{src}.{p}")
    head = family["head"]
    names = ({"dense": "transform.dense", "layer_norm": "transform.LayerNorm"}
             if head == "cls.predictions." else {"dense": "dense", "layer_norm": "layer_norm"})
    if head + names["dense"] + ".weight" in state:
        for dst, src in names.items():
            for p in ("weight", "bias"):
                out[f"encoder.lm_head.{dst}.{p}"] = take(f"{head}{src}.{p}")
        bias = state.get(head + "bias", state.get(head + "decoder.bias"))
        if bias is None:
            raise MetaConfigError("the source's MLM head has no output bias")
        out["encoder.lm_head.bias"] = bias.float()[perm]
    out["encoder.lm_head.weight"] = words  # tied, as RoBERTa's
    return out


def _plain_cfg(cfg):
    from .export import _plain

    cfg = _plain(cfg)
    cfg["common"]["user_dir"] = None
    # from_pretrained points task.data at the model directory ("." for hub_utils)
    cfg["task"]["data"] = "."
    for key, value in (("data", "."), ("save_dir", None), ("restore_file", None),
                       ("user_dir", None), ("tensorboard_logdir", None)):
        if key in cfg["model"]:
            cfg["model"][key] = value
    cfg["model"]["load_checkpoint_heads"] = True
    cfg["criterion"] = {"_name": "masked_lm"}
    cfg["optimizer"] = None
    cfg["lr_scheduler"] = None
    return cfg


def build_state(config, tokenizer, state, dict_dir, log=_quiet):
    """The fairseq checkpoint dict (model.pt) and whether the MLM head is the source's."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_meta  # noqa: F401  (--arch imported_roberta)

    bpe = FAMILIES[config["model_type"]]["bpe"]
    args = [dict_dir, "--task", "masked_lm", "--criterion", "masked_lm",
            "--tokens-per-sample", max_positions(config), "--cpu",
            "--bpe", bpe, "--dropout", config.get("hidden_dropout_prob", 0.1),
            "--attention-dropout", config.get("attention_probs_dropout_prob", 0.1),
            *fairseq_args(config, tokenizer)]
    parsed = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in args])
    cfg = convert_namespace_to_omegaconf(parsed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    expected = len(task.source_dictionary)
    if expected != len(tokenizer["vocab"]):
        raise MetaConfigError(f"the fairseq dictionary has {expected} symbols for "
                              f"{len(tokenizer['vocab'])} tokens")
    permutation, _ = fairseq_order(tokenizer["vocab"], tokenizer["family"])
    weights = mapped_weights(config, state, permutation)
    target = model.state_dict()
    # fairseq's own bookkeeping buffers (".version") stay as it builds them
    missing = [k for k in target if k not in weights and not k.startswith("encoder.lm_head.")
               and not k.endswith(".version")]
    if missing:
        raise MetaConfigError(f"no source weights for {len(missing)} fairseq tensors, e.g. {missing[0]}")
    for key, value in weights.items():
        if key not in target or target[key].shape != value.shape:
            raise MetaConfigError(f"{key}: source shape {tuple(value.shape)}, fairseq "
                                  f"{tuple(target[key].shape) if key in target else 'none'}")
        target[key] = value.clone()
    # one tensor, saved once, as fairseq ties them
    target["encoder.lm_head.weight"] = target["encoder.sentence_encoder.embed_tokens.weight"]
    own_head = "encoder.lm_head.dense.weight" in weights
    if not own_head:
        log("the source has no MLM head: a freshly initialised one (fairseq's init), its "
            "output projection tied to the input embeddings")
    plain = _plain_cfg(cfg)
    # ${task.data} is resolved when the model is loaded: hub_utils sets it to the model
    # directory, wherever it has been moved
    if bpe == "bert":
        plain["bpe"] = {"_name": "bert", "bpe_cased": not tokenizer["lowercase"],
                        "bpe_vocab_file": "${task.data}/vocab.txt"}
    else:
        plain["bpe"] = {"_name": bpe, "hf_tokenizer_json": "${task.data}/tokenizer.json"}
    return {"args": None, "cfg": plain, "model": target,
            "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": None,
                                   "lr_scheduler_state": {"best": None}, "num_updates": 0}],
            "extra_state": {}}, own_head


# --------------------------------------------------------------------------- #
# The check and the command
# --------------------------------------------------------------------------- #
def max_feature_difference(model_dir, src, text=PROBE):
    """max |fairseq extract_features − transformers last_hidden_state| on *text*, and
    whether both tokenized it alike."""
    from fairseq.models.roberta import RobertaModel
    from transformers import AutoModel, AutoTokenizer

    roberta = RobertaModel.from_pretrained(os.path.abspath(model_dir))
    roberta.eval()
    hf_tok = AutoTokenizer.from_pretrained(src)
    hf = AutoModel.from_pretrained(src)
    hf.eval()
    tokens = roberta.encode(text)
    hf_ids = hf_tok(text, return_tensors="pt")["input_ids"]
    same = (roberta.bpe.encode(text).split() == hf_tok.tokenize(text)
            and len(tokens) == hf_ids.shape[1])
    with torch.inference_mode():
        ours = roberta.extract_features(tokens)
        theirs = hf(input_ids=hf_ids).last_hidden_state
    if ours.shape != theirs.shape:
        return float("inf"), same
    return float((ours - theirs).abs().max()), same


def import_model(src, out_dir, force=False, log=_quiet):
    """Write the fairseq model directory for the transformers directory *src*; return it."""
    _prepare_out_dir(out_dir, force)
    config, tokenizer, state = read_source(src)
    stage = _stage(out_dir)
    try:
        _, symbols = fairseq_order(tokenizer["vocab"], tokenizer["family"])
        with open(os.path.join(stage, "dict.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{s} 1\n" for s in symbols)
        with open(os.path.join(stage, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{t}\n" for t in sorted(tokenizer["vocab"], key=tokenizer["vocab"].get))
        shutil.copyfile(tokenizer["path"], os.path.join(stage, "tokenizer.json"))
        checkpoint, own_head = build_state(config, tokenizer, state, stage, log)
        torch.save(checkpoint, os.path.join(stage, "model.pt"))
        flags = " ".join(str(a) for a in fairseq_args(config, tokenizer))
        with open(os.path.join(stage, "model_args.txt"), "w", encoding="utf-8") as f:
            f.write(flags + "\n")
        difference, same_tokens = max_feature_difference(stage, src)
        if not same_tokens or not difference <= MAX_FEATURE_DIFFERENCE:
            raise MetaConfigError(
                f"the imported model does not reproduce {src} (same tokens: {same_tokens}, "
                f"largest feature difference {difference:.2e} > {MAX_FEATURE_DIFFERENCE:g})")
        record = {"source": os.path.abspath(src), "model_type": config["model_type"],
                  "mlm_head": "source" if own_head else "fresh, tied to the input embeddings",
                  "layernorm_eps": config.get("layer_norm_eps"), "lowercase": tokenizer["lowercase"],
                  "fairseq_args": flags, "probe_max_feature_difference": difference}
        with open(os.path.join(stage, "import.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        _publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log(f"imported {src} ({config['model_type']}, {config['num_hidden_layers']} layers, "
        f"{config['hidden_size']} dims; MLM head: {record['mlm_head']}; probe: features "
        f"within {difference:.1e} of transformers) -> {out_dir}")
    return out_dir
