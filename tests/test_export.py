"""Using the model afterwards: scripts/export_model.py.

A tiny RoBERTa is meta-pre-trained (MLM + NSP) on real text encoded by scripts/prepare_corpus.py
(sentencepiece + fairseq-preprocess), then exported as users run it. Checked:

- the fairseq model directory loads with ``RobertaModel.from_pretrained(DIR)`` in a
  fresh process that never imports the plugin (and ``model.pt`` with
  ``torch.load(weights_only=True)``); it holds the trained weights bit for bit,
  encodes with the training sentencepiece model and dictionary, and ``fill_mask``
  answers from the model's own logits;
- the transformers export: its tokenizer gives fairseq's ids on real text, its
  logits equal fairseq's to 1e-4 (also in a padded batch), and
  ``pipeline("fill-mask")`` runs on it with fairseq's probabilities;
- bad input: one-line errors, nothing written.
"""
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import HANG_GUARD_S, META, check_ok, run_script, train

SPECIALS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
TOL = 1e-4


@pytest.fixture(scope="module")
def text(wiki_lines):
    """Training text and held-out real text (lines the model never saw)."""
    return wiki_lines[:600], [line.strip() for line in wiki_lines[600:] if line.strip()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("export")
    raw = root / "train.txt"
    raw.write_text("\n".join(text[0]) + "\n", encoding="utf-8")
    check_ok(run_script("prepare_corpus.py", "--destdir", root / "data", "--vocab-size", "1000",
                        raw))
    train(root / "data", root / "checkpoints", *META, "--meta-train-steps", "1",
          "--sentence-objective", "nsp", "--max-update", "30", "--seed", "3")
    checkpoint = root / "checkpoints" / "checkpoint_last.pt"
    # --spm-model / --dict default to the checkpoint's data directory.
    proc = check_ok(run_script("export_model.py", checkpoint, "--out-dir", root / "model",
                               "--huggingface", root / "hf"))
    return {"root": root, "checkpoint": checkpoint, "data": root / "data",
            "model": root / "model", "hf": root / "hf", "stdout": proc.stdout}


@pytest.fixture(scope="module")
def roberta(exported):
    from fairseq.models.roberta import RobertaModel

    model = RobertaModel.from_pretrained(str(exported["model"]))
    model.eval()
    return model


@pytest.fixture(scope="module")
def hf(exported):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(exported["hf"])
    model.eval()
    return AutoTokenizer.from_pretrained(exported["hf"]), model


def fairseq_ids(data_dir, sentence):
    """Independently of the hub interface: sentencepiece pieces -> dict.txt ids,
    as scripts/prepare_corpus.py + fairseq-preprocess encode training text."""
    import sentencepiece as spm
    from fairseq.data import Dictionary

    sp = spm.SentencePieceProcessor(model_file=str(data_dir / "spm.model"))
    dictionary = Dictionary.load(str(data_dir / "dict.txt"))
    pieces = sp.encode(sentence, out_type=str)
    return [dictionary.bos()] + [dictionary.index(p) for p in pieces] + [dictionary.eos()]


def real_sentences(lines, encode, max_tokens):
    """Sentences of real text (split at ' . ') that fit the model, without the
    literal special-token strings (see README: they are tokenized differently)."""
    out = []
    for line in lines:
        for sentence in line.split(" . "):
            sentence = sentence.strip()
            if (len(sentence) > 20 and not any(s in sentence for s in SPECIALS)
                    and len(encode(sentence)) <= max_tokens):
                out.append(sentence)
    return out


# --------------------------------------------------------------------------- #
# The fairseq model directory
# --------------------------------------------------------------------------- #
HUB_PROBE = r"""
import json, sys, torch
torch.load(sys.argv[1] + "/model.pt", weights_only=True)
from fairseq.models.roberta import RobertaModel
roberta = RobertaModel.from_pretrained(sys.argv[1])
roberta.eval()
out = {"plugin_imported": "fairseq_meta" in sys.modules,
       "encode": roberta.encode(sys.argv[2]).tolist(),
       "fill_mask": roberta.fill_mask(sys.argv[3], topk=3),
       "nsp": roberta.predict("next_sentence_head",
                              roberta.encode("The city is old .", "It has a river .")).tolist()}
print(json.dumps(out))
"""


def test_model_directory_loads_with_stock_fairseq(exported, text, tmp_path):
    model_dir = exported["model"]
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "dict.txt", "model.pt", "sentencepiece.bpe.model"]
    assert (model_dir / "dict.txt").read_bytes() == (exported["data"] / "dict.txt").read_bytes()
    assert ((model_dir / "sentencepiece.bpe.model").read_bytes()
            == (exported["data"] / "spm.model").read_bytes())
    # What the issue hit: the training checkpoint refuses weights-only loading.
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(exported["checkpoint"], weights_only=True)

    sentence = text[1][0]
    masked = "The <mask> of the city ."
    # A fresh process in another directory, importing only fairseq.
    proc = subprocess.run([sys.executable, "-c", HUB_PROBE, str(model_dir), sentence, masked],
                          capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["plugin_imported"] is False
    # The next-sentence head came along (log-probabilities of its two classes).
    assert len(out["nsp"][0]) == 2 and sum(map(math.exp, out["nsp"][0])) == pytest.approx(1)
    assert out["encode"] == fairseq_ids(exported["data"], sentence)

    # The trained weights, bit for bit.
    trained = torch.load(exported["checkpoint"], map_location="cpu", weights_only=False)["model"]
    hub = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert trained.keys() == hub.keys()
    assert all(torch.equal(trained[k], hub[k]) for k in trained)

    # fill_mask: the three most probable tokens of the model's own output.
    from fairseq.models.roberta import RobertaModel

    roberta = RobertaModel.from_pretrained(str(model_dir))
    roberta.eval()
    before = fairseq_ids(exported["data"], "The")[:-1]
    tokens = torch.tensor(before + [roberta.task.mask_idx]
                          + fairseq_ids(exported["data"], "of the city .")[1:])
    with torch.no_grad():
        top = roberta.model(tokens.unsqueeze(0))[0][0, len(before)].softmax(-1).topk(3)
    # fairseq's fill_mask leaves <s> and </s> out of its list (Dictionary.string
    # drops them) and pairs the rest with the leading probabilities; compare the
    # entries before the first one it left out.
    dictionary = roberta.task.source_dictionary
    kept = [i for i in top.indices.tolist() if i not in (dictionary.bos(), dictionary.eos())]
    assert [t.strip() for _, _, t in out["fill_mask"]] == [
        roberta.bpe.decode(dictionary[i]).strip() for i in kept]
    n = next((k for k, i in enumerate(top.indices.tolist()) if i not in kept), 3)
    assert [p for _, p, _ in out["fill_mask"]][:n] == pytest.approx(
        top.values[:n].tolist(), abs=1e-6)


# --------------------------------------------------------------------------- #
# The transformers export
# --------------------------------------------------------------------------- #
def test_tokenizer_gives_fairseq_ids_on_real_text(exported, text, hf):
    tokenizer, _ = hf
    lines = [line for line in text[0] + text[1]
             if line.strip() and not any(s in line for s in SPECIALS)]
    assert len(lines) > 50
    from fairseq.data import Dictionary

    dictionary = Dictionary.load(str(exported["data"] / "dict.txt"))
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(exported["data"] / "spm.model"))
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    # Symbols fairseq-preprocess added that are no sentencepiece pieces (surface
    # strings of characters sentencepiece does not know): a tokenizer converted
    # from the sentencepiece model has no ids for them.
    unknown_chars = [s for s in dictionary.symbols[4:]
                     if s not in pieces and not s.startswith("madeupword")]
    covered = 0
    for line in lines:
        expected = fairseq_ids(exported["data"], line)
        assert tokenizer(line)["input_ids"] == expected, line
        covered += any(dictionary.index(s) in expected for s in unknown_chars)
    if unknown_chars:
        assert covered > 0  # the real text exercises them


def test_logits_equal_fairseq(exported, text, roberta, hf):
    tokenizer, model = hf
    max_tokens = roberta.model.max_positions()
    sentences = real_sentences(text[1] + text[0][-100:],
                               lambda s: fairseq_ids(exported["data"], s), max_tokens)[:12]
    assert len(sentences) >= 8
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = model(**batch).logits
    assert theirs.shape[-1] == len(roberta.task.source_dictionary)
    for i, sentence in enumerate(sentences):
        tokens = torch.tensor(fairseq_ids(exported["data"], sentence))
        assert batch["input_ids"][i, :len(tokens)].tolist() == tokens.tolist()
        assert batch["attention_mask"][i].sum() == len(tokens)
        with torch.no_grad():
            ours = roberta.model(tokens.unsqueeze(0))[0][0]
        difference = (ours - theirs[i, :len(tokens)]).abs().max().item()
        assert difference <= TOL, (sentence, difference)


def test_fill_mask_pipeline_matches_fairseq(exported, text, roberta):
    from transformers import pipeline

    sentence = next(s for s in real_sentences(text[1], roberta.encode, 30) if " the " in s)
    masked = sentence.replace(" the ", " <mask> ", 1)
    fill_mask = pipeline("fill-mask", model=str(exported["hf"]))
    results = fill_mask(masked, top_k=5)
    assert len(results) == 5
    # The five most probable ids of fairseq's model, with its probabilities.
    tokens = roberta.task.source_dictionary.encode_line(
        "<s> " + " <mask> ".join(roberta.bpe.encode(s.rstrip()) for s in masked.split("<mask>"))
        + " </s>", append_eos=False, add_if_not_exist=False).long()
    position = tokens.tolist().index(roberta.task.mask_idx)
    with torch.no_grad():
        probs = roberta.model(tokens.unsqueeze(0))[0][0, position].softmax(-1)
    top = probs.topk(5)
    assert [r["score"] for r in results] == pytest.approx(top.values.tolist(), abs=TOL)
    for r in results:
        assert r["score"] == pytest.approx(probs[r["token"]].item(), abs=TOL)
    assert "max |logit difference| to fairseq" in exported["stdout"]


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def _bpe_spm(tmp_path, lines):
    import sentencepiece as spm

    path = tmp_path / "bpe.model"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(tmp_path / "bpe"), model_type="bpe",
        vocab_size=400, hard_vocab_limit=False, minloglevel=2, bos_id=-1, eos_id=-1, pad_id=-1)
    return path


ERRORS = {
    "missing checkpoint": (lambda e, t: [t / "nope.pt", t / "out"], {},
                           "checkpoint not found: "),
    "wrong dictionary": (lambda e, t: [e["checkpoint"], t / "out"],
                         {"dictionary": "small.txt"},
                         "gives 105 symbols with <mask>, but the checkpoint has"),
    "no dictionary": (lambda e, t: [e["checkpoint"], t / "out"],
                      {"dictionary": "nope.txt"}, "--dict not found: "),
    "non-empty out dir": (lambda e, t: [e["checkpoint"], e["model"]], {},
                          "exists and is not empty (use --force to replace it)"),
    "bpe sentencepiece": (lambda e, t: [e["checkpoint"], t / "out"],
                          {"spm_model": "bpe.model", "huggingface": "hf"},
                          "cannot be expressed as an XLM-R tokenizer (model type bpe"),
    "same output twice": (lambda e, t: [e["checkpoint"], t / "out"],
                          {"huggingface": "out"}, "--huggingface must be another directory"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_refused_before_anything_is_written(case, exported, text, tmp_path):
    from fairseq_meta.errors import MetaConfigError
    from fairseq_meta.run.export import export

    root = exported["root"]
    if not (root / "small.txt").exists():
        (root / "small.txt").write_text("".join(f"w{i} 1\n" for i in range(100)))
    if not (root / "bpe.model").exists():
        _bpe_spm(root, text[0])
    make_args, kwargs, message = ERRORS[case]
    kwargs = {k: str((root if k != "huggingface" else tmp_path) / v) for k, v in kwargs.items()}
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(MetaConfigError) as error:
        export(*map(str, make_args(exported, tmp_path)), log=lambda m: None, **kwargs)
    assert message in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_command_line_error_is_one_line(exported, tmp_path):
    proc = run_script("export_model.py", exported["checkpoint"], "--out-dir", exported["model"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"export_model: error: {exported['model']} exists and is "
                                   "not empty (use --force to replace it)"), proc.stderr
