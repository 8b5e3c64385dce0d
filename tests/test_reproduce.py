"""scripts/reproduce.py --quick end to end on the real data in ../shared/data: corpora ->
GLUE -> pre-training with k = 0 and 1 (MLM, MLM+NSP; --max-k 1 to keep CI short, every k
up to --max-k takes the same code path) -> supervised k = 0/1 -> fine-tuning every
checkpoint on five GLUE tasks -> report. Checks the report against the raw per-run
results (recomputed here), the equal-token bookkeeping, that the right checkpoints were
fine-tuned, resumption, and the one-line errors."""
import json
import os
import statistics
import subprocess
import sys

import random

import pytest
import torch

from conftest import REPO, SHARED_DATA
from fairseq_meta import experiment, report

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "glue").is_dir(),
                                reason="needs ../shared/data")

SCRIPT = REPO / "scripts" / "reproduce.py"
TASKS = ["RTE", "MRPC", "CoLA", "STS-B", "SST-2"]
# the deepest k pre-trained here; the quick mode's own default is 2, which costs two more
# pre-training runs and four more fine-tuned checkpoints (a third of the pipeline)
MAX_K = 1
QUICK = ["--quick", "--max-k", MAX_K]


def _run(*args, timeout=3600):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "quick"
    proc = _run(*QUICK, "--out-dir", out, "--jobs", 2)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out, proc


def _settings(out):
    return json.loads((out / "settings.json").read_text())


@pytest.mark.slow
def test_quick_mode_writes_every_score_and_plot(quick_run):
    out, _ = quick_run
    result = json.loads((out / "results.json").read_text())
    n = _settings(out)["updates"]
    assert _settings(out)["max_k"] == MAX_K
    expected = {f"{obj}-k{k}" for obj in ("mlm", "mlm+nsp") for k in range(MAX_K + 1)}
    expected |= {f"{obj}-k0@{m * n}" for obj in ("mlm", "mlm+nsp") for m in range(2, MAX_K + 2)}
    expected |= {"supervised-k0", "supervised-k1"}
    assert set(result["scores"]) == expected and result["not_fine_tuned"] == []
    for label, per_task in result["scores"].items():
        assert set(per_task) == set(TASKS), label
        for task, per_seed in per_task.items():
            assert list(per_seed) == ["1"], (label, task)
            assert all(v == v and abs(v) <= 100 for v in per_seed.values()), (label, task)
    for png in ("pretrain_loss.png", "downstream.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    report = (out / "results.md").read_text()
    for label in expected:
        assert f"| {label} |" in report


@pytest.mark.slow
def test_report_matches_the_raw_fine_tuning_results(quick_run):
    """Scores and paired differences recomputed from each finetune_glue results.json."""
    out, _ = quick_run
    result = json.loads((out / "results.json").read_text())
    primary = {"RTE": ["accuracy"], "MRPC": ["f1", "accuracy"], "CoLA": ["mcc"],
               "STS-B": ["pearson", "spearman"], "SST-2": ["accuracy"]}
    raw = {}
    for label in result["scores"]:
        tasks = json.loads((out / "finetune" / label / "results.json").read_text())["tasks"]
        raw[label] = {t: statistics.fmean(tasks[t]["splits"]["valid"]["seeds"]["1"][m]
                                          for m in primary[t]) for t in TASKS}
        for t in TASKS:
            assert result["scores"][label][t]["1"] == pytest.approx(raw[label][t], abs=1e-9)
    by_title = {d["title"]: d for d in result["paired_differences"]}
    n = _settings(out)["updates"]
    m = (MAX_K + 1) * n
    d = by_title[f"mlm: k={MAX_K} vs k=0, equal tokens ({m} k=0 updates)"]
    assert d["baseline"] == f"mlm-k0@{m}"
    for t in TASKS:
        assert d["per_task"][t]["mean"] == pytest.approx(raw[f"mlm-k{MAX_K}"][t] - raw[f"mlm-k0@{m}"][t])
    avg = statistics.fmean(raw[f"mlm-k{MAX_K}"][t] for t in TASKS) - statistics.fmean(
        raw[f"mlm-k0@{m}"][t] for t in TASKS)
    assert d["average"]["mean"] == pytest.approx(avg)
    held_out = by_title["supervised: k=1 vs k=0, held-out tasks (RTE, STS-B)"]
    assert set(held_out["per_task"]) == {"RTE", "STS-B"}


@pytest.mark.slow
def test_equal_tokens_and_the_right_checkpoints(quick_run):
    out, _ = quick_run
    result = json.loads((out / "results.json").read_text())
    n = _settings(out)["updates"]
    curves = result["pretrain"]
    s = _settings(out)
    full_batch = s["batch_size"] * s["tokens_per_sample"]
    # MLM blocks are full (--sample-break-mode none): every mini-batch holds exactly
    # batch_size x tokens_per_sample tokens, and an update at depth k reads k + 1 of
    # them. The counts are summed from the logs, so they are exact integers.
    k0 = {p["updates"]: p["tokens"] for p in curves["mlm-k0"]["valid"]}
    assert k0[n] == n * full_batch and k0[(MAX_K + 1) * n] == (MAX_K + 1) * n * full_batch
    for k in range(1, MAX_K + 1):
        kk = {p["updates"]: p["tokens"] for p in curves[f"mlm-k{k}"]["valid"]}
        assert kk[n] == (k + 1) * n * full_batch == k0[(k + 1) * n]

    def fine_tuned_checkpoint(label):
        meta = json.loads((out / "finetune" / label / "results.json").read_text())
        state = torch.load(meta["checkpoint"], map_location="cpu", weights_only=False)
        return state["cfg"], state["optimizer_history"][-1]["num_updates"]

    for label, task, k, updates in [("mlm-k0", "meta_masked_lm", 0, n),
                                    (f"mlm-k{MAX_K}", "meta_masked_lm", MAX_K, n),
                                    (f"mlm+nsp-k0@{2 * n}", "meta_masked_lm", 0, 2 * n),
                                    ("supervised-k1", "meta_sentence_prediction", 1, None)]:
        cfg, num_updates = fine_tuned_checkpoint(label)
        assert cfg["task"]["_name"] == task, label
        assert cfg["task"]["meta_train_steps"] == k, label
        if updates is not None:
            assert num_updates == updates, label
    assert fine_tuned_checkpoint("mlm+nsp-k1")[0]["task"]["sentence_objective"] == "nsp"


@pytest.mark.slow
def test_rerun_skips_finished_steps_and_other_settings_are_refused(quick_run):
    out, _ = quick_run
    before = (out / "results.json").read_text()
    proc = _run(*QUICK, "--out-dir", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # data (corpora, GLUE), pre-training (2 objectives x k = 0..MAX_K), supervised (k = 0, 1),
    # fine-tuning (per objective k = 0..MAX_K and MAX_K equal-token k = 0 checkpoints; supervised)
    runs = 2 + 2 * (MAX_K + 1) + 2 + (2 * (2 * MAX_K + 1) + 2)
    assert "running" not in proc.stdout and proc.stdout.count("skipped") == runs
    assert (out / "results.json").read_text() == before

    proc = _run(*QUICK, "--out-dir", out, "--updates", 14, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "other settings (updates)" in err[0], proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1,x"], "--seeds must be comma-separated integers"),
    (["--seeds", "1,1"], "--seeds has repeats"),
    (["--updates", "0"], "--updates must be a positive integer"),
    (["--embed-dim", "63"], "is not divisible by --heads"),
    (["--inner-lr", "0"], "--inner-lr must be positive"),
    (["--data-root", "/nonexistent"], "not found"),
    (["--corpora", "wiki"], "--corpora wants NAME=PATH"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    proc = _run("--quick", "--out-dir", out, *args, timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reproduce.py: error:") and message in err[0], proc.stderr
    assert not out.exists()


def _hand_made_out_dir(out, seeds=(1, 2)):
    """What the runs leave, written by hand: fairseq json logs with episode_tokens,
    .done markers, finetune_glue results.json; mlm-k1 not fine-tuned yet."""
    s = experiment.settings_for(True, {}, SHARED_DATA)
    exp = experiment.Experiment(out=out, settings=s, quick=True, jobs=1, data_root=SHARED_DATA)
    experiment.check_settings_file(exp)
    rng = random.Random(0)
    block = s["batch_size"] * s["tokens_per_sample"]
    for name, objective, k, updates in experiment.pretrain_runs(s):
        run_dir = out / "pretrain" / name
        run_dir.mkdir(parents=True)
        rows = []
        for u in range(s["log_interval"], updates + 1, s["log_interval"]):
            rows.append("x | INFO | train_inner | " + json.dumps(
                {"loss": f"{rng.uniform(8, 12):.3f}", "num_updates": str(u),
                 "episode_tokens": str(s["log_interval"] * (k + 1) * block)}))
            if u % experiment.validate_interval(s) == 0:
                rows.append("x | INFO | valid | " + json.dumps(
                    {"valid_loss": f"{rng.uniform(8, 12):.3f}", "valid_num_updates": str(u)}))
        (run_dir / "train.log").write_text("\n".join(rows) + "\n")
        (run_dir / ".done").write_text('{"seconds": 1.0}\n')
    metrics = {"RTE": ["accuracy"], "MRPC": ["f1", "accuracy"], "CoLA": ["mcc"],
               "STS-B": ["pearson", "spearman"], "SST-2": ["accuracy"]}
    raw = {}
    for label, _, _, _ in experiment.checkpoints_to_finetune(out, s):
        run_dir = out / "finetune" / label
        run_dir.mkdir(parents=True)
        per_seed = {t: {str(sd): {m: rng.uniform(0, 100) for m in ms} for sd in seeds}
                    for t, ms in metrics.items()}
        tasks = {t: {"splits": {"valid": {"name": t, "seeds": v}}} for t, v in per_seed.items()}
        (run_dir / "results.json").write_text(json.dumps({"tasks": tasks}))
        if label != "mlm-k1":
            (run_dir / ".done").write_text("{}")
            raw[label] = {t: {sd: statistics.fmean(v[str(sd)][m] for m in metrics[t])
                              for sd in seeds} for t, v in per_seed.items()}
    return exp, raw


def test_report_on_a_hand_made_out_dir(tmp_path):
    """The report, run on its own (no training): scores, paired differences, exact token
    counts and the list of checkpoints not fine-tuned yet, recomputed here."""
    exp, raw = _hand_made_out_dir(tmp_path / "out")
    report.write_report(exp)
    result = json.loads((exp.out / "results.json").read_text())
    assert result["not_fine_tuned"] == ["mlm-k1"] and set(result["scores"]) == set(raw)
    for label, per_task in raw.items():
        for task, per_seed in per_task.items():
            for seed, value in per_seed.items():
                assert result["scores"][label][task][str(seed)] == pytest.approx(value, abs=1e-9)
    n = exp.settings["updates"]
    by_title = {d["title"]: d for d in result["paired_differences"]}
    d = by_title[f"mlm+nsp: k=2 vs k=0, equal tokens ({3 * n} k=0 updates)"]
    for task in TASKS:
        diffs = [raw["mlm+nsp-k2"][task][sd] - raw[f"mlm+nsp-k0@{3 * n}"][task][sd] for sd in (1, 2)]
        assert d["per_task"][task]["mean"] == pytest.approx(statistics.fmean(diffs))
        assert d["per_task"][task]["std"] == pytest.approx(statistics.stdev(diffs))
        assert d["per_task"][task]["wins"] == sum(x > 0 for x in diffs)
    assert not any("mlm: k=1" in t for t in by_title)  # its checkpoint is not fine-tuned
    block = exp.settings["batch_size"] * exp.settings["tokens_per_sample"]
    for name, curve in result["pretrain"].items():
        k = curve["k"]
        assert [p["tokens"] for p in curve["valid"]] == [
            p["updates"] * (k + 1) * block for p in curve["valid"]], name
    md = (exp.out / "results.md").read_text()
    assert "| checkpoint | RTE (accuracy) | MRPC (f1/accuracy) | CoLA (mcc) |" in md
    assert "**Not fine-tuned yet (left out of this report):** mlm-k1." in md
    for png in ("pretrain_loss.png", "downstream.png"):
        assert (exp.out / png).read_bytes()[:4] == b"\x89PNG"


def test_other_settings_for_the_same_out_dir_are_refused(tmp_path):
    exp, _ = _hand_made_out_dir(tmp_path / "out")
    exp.settings = experiment.settings_for(True, {"updates": 14}, SHARED_DATA)
    with pytest.raises(experiment.MetaConfigError, match=r"other settings \(updates\)"):
        experiment.check_settings_file(exp)
