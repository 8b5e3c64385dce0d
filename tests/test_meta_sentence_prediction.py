"""Supervised meta pre-training over several labeled tasks (meta_sentence_prediction)."""
import re
import subprocess
import sys

import pytest
import torch
import conftest
from conftest import SHARED_DATA, TINY_ROBERTA, USER_DIR, model_weights, run_cli

GLUE = SHARED_DATA / "glue"
# task: (file columns of sentence1, sentence2 or None, label), header?, rows
LAYOUT = {
    "RTE": (1, 2, 3, True),
    "SST-2": (0, None, 1, True),
    "STS-B": (7, 8, 9, True),
}
META_SP = ["--user-dir", USER_DIR, "--task", "meta_sentence_prediction",
           "--criterion", "meta_sentence_prediction", "--max-positions", "32",
           "--shorten-method", "truncate"]


def _preprocess(srcdict, prefix_train, prefix_valid, destdir, only_source_dict=True):
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref", prefix_train,
           "--validpref", prefix_valid, "--destdir", destdir, "--workers", "1"]
    if srcdict:
        cmd += ["--srcdict", srcdict]
    subprocess.run(cmd, check=True, capture_output=True)


def binarize_task(name, root, srcdict, rows=60):
    s1, s2, lab, header = LAYOUT[name]
    raw = root / "raw" / name
    raw.mkdir(parents=True)
    for split, src in (("train", "train.tsv"), ("valid", "dev.tsv")):
        lines = (GLUE / name / src).read_text(encoding="utf-8-sig").splitlines()[int(header):][:rows]
        cols = [line.split("\t") for line in lines]
        (raw / f"{split}.input0").write_text("\n".join(c[s1].lower() for c in cols) + "\n")
        if s2 is not None:
            (raw / f"{split}.input1").write_text("\n".join(c[s2].lower() for c in cols) + "\n")
        (raw / f"{split}.label").write_text("\n".join(c[lab] for c in cols) + "\n")
    out = root / name
    for key in ["input0", "input1"] if s2 is not None else ["input0"]:
        _preprocess(srcdict, raw / f"train.{key}", raw / f"valid.{key}", out / key)
    if name == "STS-B":
        (out / "label").mkdir(parents=True)
        for split in ("train", "valid"):
            (out / "label" / f"{split}.label").write_text((raw / f"{split}.label").read_text())
    else:
        _preprocess(None, raw / "train.label", raw / "valid.label", out / "label")
    return out


# sentence_prediction has no --tokens-per-sample (its length limit is --max-positions)
DEFAULTS = [a for a in conftest.TRAIN_DEFAULTS if a not in ("--tokens-per-sample", "32")]


def train(data, save_dir, *args):
    proc = run_cli("train", [data, "--save-dir", save_dir, *DEFAULTS, *TINY_ROBERTA, *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def glue(tmp_path_factory, corpus):
    if not GLUE.exists():
        pytest.skip(f"GLUE data not found: {GLUE}")
    root = tmp_path_factory.mktemp("glue")
    for name in LAYOUT:
        binarize_task(name, root, corpus / "dict.txt")
    return root


def test_depth_zero_single_task_equals_sentence_prediction(glue, tmp_path):
    """k = 0 with one task: fairseq's sentence_prediction, update for update
    (the head is named after the task instead of sentence_classification_head)."""
    common = ["--max-update", "6", "--seed", "5", "--init-token", "0", "--separator-token", "2",
              "--max-positions", "32", "--shorten-method", "truncate"]
    train(glue / "RTE", tmp_path / "plain", "--user-dir", USER_DIR, "--task", "sentence_prediction",
          "--criterion", "sentence_prediction", "--num-classes", "2", "--optimizer", "adam", *common)
    train(glue, tmp_path / "meta", *META_SP, "--tasks", "RTE", "--optimizer", "meta_adam",
          "--meta-train-steps", "0", *common)
    plain = model_weights(tmp_path / "plain" / "checkpoint_last.pt")
    meta = model_weights(tmp_path / "meta" / "checkpoint_last.pt")
    rename = {k.replace("classification_heads.sentence_classification_head.", "classification_heads.RTE."): v
              for k, v in plain.items()}
    assert rename.keys() == meta.keys()
    for k in meta:
        assert torch.equal(rename[k], meta[k]), k


def test_meta_training_over_three_tasks_logs_each_task(glue, tmp_path):
    proc = train(glue, tmp_path, *META_SP, "--tasks", "RTE,SST-2,STS-B", "--optimizer", "meta_adam",
                 "--meta-train-steps", "1", "--inner-lr", "1e-3", "--task-sampling-alpha", "0.5",
                 "--max-update", "4", "--seed", "2")
    log = proc.stdout + proc.stderr
    assert "task sampling probabilities" in log
    last = [line for line in log.splitlines() if "train_inner" in line][-1]
    for key in ("meta_train_loss", "meta_test_loss", "RTE_accuracy", "SST-2_accuracy", "STS-B_pearson",
                "meta_train_RTE_loss"):
        assert f"{key}=" in last, (key, last)
    assert "_mcc" not in last  # a dev-set score: validation only
    valid = [line for line in log.splitlines() if "valid on 'valid'" in line][-1]
    for key in ("RTE_accuracy", "RTE_mcc", "SST-2_mcc", "STS-B_loss", "STS-B_pearson"):
        assert f"| {key} " in valid, (key, valid)
    assert "confusion" not in log and "_sxy" not in log  # the summed statistics stay hidden
    heads = {k.split(".")[1] for k in model_weights(tmp_path / "checkpoint_last.pt") if k.startswith("classification_heads.")}
    assert heads == {"RTE", "SST-2", "STS-B"}


def test_starts_from_meta_masked_lm_and_feeds_sentence_prediction(corpus, glue, tmp_path):
    """meta_masked_lm checkpoint → meta_sentence_prediction → fairseq-hydra-train
    fine-tuning (configs/finetune/rte.yaml, stock sentence_prediction) → a dev metric."""
    conftest.train(corpus, tmp_path / "mlm", "--user-dir", USER_DIR, "--task", "meta_masked_lm",
                   "--criterion", "meta_masked_lm", "--optimizer", "meta_adam",
                   "--meta-train-steps", "1", "--max-update", "2")
    train(glue, tmp_path / "sup", *META_SP, "--tasks", "RTE,SST-2", "--optimizer", "meta_adam",
          "--meta-train-steps", "1", "--max-update", "2",
          "--restore-file", tmp_path / "mlm" / "checkpoint_last.pt",
          "--reset-optimizer", "--reset-dataloader", "--reset-meters")
    proc = run_cli("hydra_train", [
        "--config-dir", conftest.REPO / "configs" / "finetune", "--config-name", "rte",
        f"task.data={glue / 'RTE'}", f"common.user_dir={USER_DIR}",
        f"checkpoint.restore_file={tmp_path / 'sup' / 'checkpoint_last.pt'}",
        f"checkpoint.save_dir={tmp_path / 'ft'}", f"hydra.run.dir={tmp_path / 'ft-hydra'}",
        "model.encoder_layers=2", "model.encoder_embed_dim=32", "model.encoder_ffn_embed_dim=64",
        "model.encoder_attention_heads=2", "task.max_positions=32", "common.cpu=true",
        "common.fp16=false", "optimization.max_update=2", "lr_scheduler.warmup_updates=0",
        "dataset.batch_size=4", "dataset.num_workers=0", "common.log_format=simple",
    ])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Loaded checkpoint {tmp_path / 'sup' / 'checkpoint_last.pt'}" in proc.stdout + proc.stderr
    valid = [line for line in (proc.stdout + proc.stderr).splitlines() if "valid on 'valid'" in line]
    assert valid and re.search(r"accuracy \d", valid[-1])


def _reduced(logging_outputs_per_batch):
    """What fairseq's validation prints: reduce_metrics once per batch inside one
    aggregation (Trainer.valid_step), smoothed at the end."""
    from fairseq.logging import metrics

    from fairseq_meta.criterions.meta_sentence_prediction import MetaSentencePredictionCriterion

    with metrics.aggregate(new_root=True) as agg:
        for log in logging_outputs_per_batch:
            MetaSentencePredictionCriterion.reduce_metrics([log])
    return agg.get_smoothed_values()


def test_validation_scores_are_over_the_whole_dev_set():
    """MCC and Pearson's r of a dev set read in batches equal the scores of the whole
    set (glue_metrics, an independent implementation), not a mean of per-batch scores."""
    from fairseq_meta.prep import glue_metrics as gm

    g = torch.Generator().manual_seed(0)
    sizes = [7, 16, 16, 3]
    labels = [torch.randint(0, 2, (n,), generator=g) for n in sizes]
    # a classifier right about 70% of the time, 3 classes for the NLI-like task
    preds = [torch.where(torch.rand(n, generator=g) < 0.7, y, 1 - y) for n, y in zip(sizes, labels)]
    labels3 = [torch.randint(0, 3, (n,), generator=g) for n in sizes]
    preds3 = [torch.where(torch.rand(n, generator=g) < 0.6, y, (y + 1) % 3) for n, y in zip(sizes, labels3)]
    xs = [torch.randn(n, generator=g) for n in sizes]
    ys = [x + torch.randn(x.shape, generator=g) for x in xs]
    logs = []
    for p, y, p3, y3, x, z in zip(preds, labels, preds3, labels3, xs, ys):
        n = len(y)
        log = {"loss": 1.0, "sample_size": 3 * n, "CoLA_count": n, "CoLA_loss": 1.0,
               "CoLA_correct": (p == y).sum(), "MNLI_count": n, "MNLI_loss": 1.0,
               "MNLI_correct": (p3 == y3).sum(), "STS-B_count": n, "STS-B_loss": 1.0,
               "STS-B_sx": x.sum(), "STS-B_sy": z.sum(), "STS-B_sxx": (x * x).sum(),
               "STS-B_syy": (z * z).sum(), "STS-B_sxy": (x * z).sum()}
        log.update({f"CoLA_confusion_{a}_{b}": ((y == a) & (p == b)).sum() for a in range(2) for b in range(2)})
        log.update({f"MNLI_confusion_{a}_{b}": ((y3 == a) & (p3 == b)).sum() for a in range(3) for b in range(3)})
        logs.append(log)
    values = _reduced(logs)
    cat = torch.cat
    assert values["CoLA_mcc"] == pytest.approx(100 * gm.matthews_corrcoef(cat(preds), cat(labels)), abs=0.005)
    assert values["MNLI_mcc"] == pytest.approx(100 * gm.matthews_corrcoef(cat(preds3), cat(labels3)), abs=0.005)
    assert values["STS-B_pearson"] == pytest.approx(gm.pearson(cat(xs), cat(ys)), abs=5e-5)
    per_batch = sum(n * gm.matthews_corrcoef(p, y) for n, p, y in zip(sizes, preds, labels)) / sum(sizes)
    assert abs(100 * per_batch - values["CoLA_mcc"]) > 1  # the two readings differ on this data
    assert not any(key.startswith("_") for key in values)


def test_majority_class_predictions_score_mcc_zero():
    log = {"loss": 1.0, "sample_size": 10, "CoLA_count": 10, "CoLA_loss": 1.0, "CoLA_correct": 7,
           "CoLA_confusion_0_0": 0, "CoLA_confusion_0_1": 3, "CoLA_confusion_1_0": 0, "CoLA_confusion_1_1": 7}
    values = _reduced([log])
    assert values["CoLA_accuracy"] == 70.0 and values["CoLA_mcc"] == 0.0


def test_confusion_counts_come_from_the_heads_predictions():
    from fairseq_meta.criterions.meta_sentence_prediction import MetaSentencePredictionCriterion

    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [-1.0, 1.0], [0.2, 0.1]])
    target = torch.tensor([0, 1, 1, 1, 0])

    class Head(torch.nn.Module):
        def forward(self, src_tokens, features_only, classification_head_name):
            assert classification_head_name == "CoLA" and features_only
            return logits, None

        def get_targets(self, sample, net_output):
            return sample["target"]

    counts = MetaSentencePredictionCriterion._confusion(None, "CoLA", Head(), {
        "net_input": {"src_tokens": None}, "target": target})
    # preds 0, 1, 0, 1, 0 against labels 0, 1, 1, 1, 0
    assert {k: int(v) for k, v in counts.items()} == {
        "CoLA_confusion_0_0": 2, "CoLA_confusion_0_1": 0, "CoLA_confusion_1_0": 1, "CoLA_confusion_1_1": 2}


@pytest.mark.parametrize("case", ["unknown-task", "no-labels"])
def test_bad_input_is_one_line(glue, tmp_path, case):
    import shutil

    data, tasks = glue, "RTE,QQP"
    if case == "no-labels":
        data = tmp_path / "data"
        shutil.copytree(glue / "RTE", data / "RTE")
        shutil.rmtree(data / "RTE" / "label")
        tasks = "RTE"
    proc = run_cli("train", [data, "--save-dir", tmp_path / "save", *DEFAULTS, *TINY_ROBERTA,
                             *META_SP, "--tasks", tasks, "--optimizer", "meta_adam"])
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "error:" in err[-1] and ("QQP" in err[-1] if case == "unknown-task" else "no labels" in err[-1])
    assert not any((tmp_path / "save").glob("*"))
