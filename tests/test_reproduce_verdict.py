"""scripts/reproduce_verdict.py (fairseq_meta/experiments/reproduce_verdict/): the selection rule on
hand-written fairseq log lines, bad input, and --quick end to end on ../shared/data
(corpus -> sweep -> selection -> verdict runs -> adaptation evaluation -> report), checked
against the raw logs and evaluation results, then resumed after one step's output is
deleted."""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import types

import pytest
import torch

from conftest import HANG_GUARD_S, REPO, SHARED_DATA
from fairseq_meta.experiments import experiment, reproduce_verdict as ve
from fairseq_meta.experiments.reproduce_verdict.evaluate_runs import glue_settings
from fairseq_meta.experiments.reproduce_verdict.report import measurement_names
from fairseq_meta.errors import MetaConfigError

SCRIPT = REPO / "scripts" / "reproduce_verdict.py"
needs_data = pytest.mark.skipif(
    not ((SHARED_DATA / "gutenberg").is_dir() and (SHARED_DATA / "wikitext-2").is_dir()),
    reason="needs ../shared/data")


def _run(*args, timeout=HANG_GUARD_S):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def _valid(update, loss, **extra):
    return "2026-11-26 10:00:00 | INFO | valid | " + json.dumps(
        {"epoch": 1, "valid_loss": f"{loss}", "valid_num_updates": str(update), **extra})


def _train(update, **values):
    return "2026-11-26 10:00:00 | INFO | train_inner | " + json.dumps(
        {"epoch": 1, "num_updates": str(update), **{k: str(v) for k, v in values.items()}})


def _valid_rows(*lines):
    return ve.read_log(lines)[1]


def _quick_experiment(out, **overrides):
    """The --quick mode's experiment on ../shared/data, writing to ``out``."""
    s, derived = ve.settings_for(True, overrides, SHARED_DATA)
    return ve.VerdictExperiment(out=out, settings=s, derived=derived, quick=True, jobs=1, data_root=SHARED_DATA)


# --------------------------------------------------------------------------- #
# The selection rule
# --------------------------------------------------------------------------- #
def test_selection_is_at_the_largest_update_every_run_reached():
    runs = {
        "s1-k1-sgd0.01": _valid_rows(_valid(500, 9.0), _valid(1000, 8.6), _valid(1500, 8.40)),
        # stopped before 1500: 1500 is not common, although the third run is best there
        "s1-k1-sgd0.03": _valid_rows(_valid(500, 8.9), _valid(1000, 8.5), _valid(1250, 8.45)),
        "s1-k1-adam3e-4": _valid_rows(_valid(500, 9.1), _valid(1000, 8.7), _valid(1500, 7.0)),
    }
    assert ve.select(runs) == {"update": 1000, "selected": "s1-k1-sgd0.03",
                               "valid_loss": {"s1-k1-sgd0.01": 8.6, "s1-k1-sgd0.03": 8.5,
                                              "s1-k1-adam3e-4": 8.7}}


def test_a_run_missing_one_validation_does_not_move_the_update_back_past_it():
    runs = {"a": _valid_rows(_valid(500, 9.0), _valid(1500, 8.3)),  # no record at 1000
            "b": _valid_rows(_valid(500, 8.8), _valid(1000, 8.6), _valid(1500, 8.4))}
    assert ve.select(runs)["update"] == 1500 and ve.select(runs)["selected"] == "a"
    # without the record at 1500 either, the largest common update is 500
    runs["a"] = _valid_rows(_valid(500, 9.0))
    assert ve.select(runs) == {"update": 500, "selected": "b", "valid_loss": {"a": 9.0, "b": 8.8}}


def test_a_tie_goes_to_the_setting_listed_first():
    first = _valid_rows(_valid(8, 8.5))
    second = _valid_rows(_valid(8, 8.5))
    assert ve.select({"x": first, "y": second})["selected"] == "x"
    assert ve.select({"y": second, "x": first})["selected"] == "y"


def test_log_reading_keeps_the_last_record_of_a_repeated_update_and_skips_other_lines():
    lines = [_train(2, adaptation_gain=0.5, episode_tokens=100), _valid(4, 8.9),
             "2026-11-26 | INFO | fairseq_cli.train | begin validation on \"valid\" subset",
             "| valid | not json", _train(4, adaptation_gain=0.25, episode_tokens=100),
             # resumed from the checkpoint at 2: updates 4 and its validation again
             _train(4, adaptation_gain=0.125, episode_tokens=100), _valid(4, 8.7)]
    train, valid = ve.read_log(lines)
    assert sorted(train) == [2, 4] and train[4]["adaptation_gain"] == "0.125"
    assert list(valid) == [4] and ve.select({"a": valid})["valid_loss"] == {"a": 8.7}
    assert ve.tokens_at(train) == {0: 0, 2: 100, 4: 200}


def test_tokens_are_summed_up_to_each_logged_update_also_in_fairseqs_exponent_format():
    rows = ve.read_log([_train(2, episode_tokens=256), _train(4, episode_tokens="1.2288e+06"),
                        _train(6, episode_tokens=512)])[0]
    assert ve.tokens_at(rows) == {0: 0, 2: 256, 4: 256 + 1228800, 6: 256 + 1228800 + 512}


def test_selection_errors_are_one_line():
    with pytest.raises(MetaConfigError, match="share no validation update"):
        ve.select({"a": _valid_rows(_valid(4, 9.0)), "b": _valid_rows(_valid(8, 9.0))})
    with pytest.raises(MetaConfigError, match="b has no validation record"):
        ve.select({"a": _valid_rows(_valid(4, 9.0)), "b": _valid_rows(_train(4))})


# --------------------------------------------------------------------------- #
# Settings
# --------------------------------------------------------------------------- #
@needs_data
@pytest.mark.parametrize("overrides, message", [
    (dict(updates=10), "--updates 10 is not a multiple of --checkpoint-interval 4"),
    (dict(checkpoint_interval=3, updates=9, valid_interval=3), "not a multiple of --log-interval 2"),
    (dict(seeds="1,2"), "differ from --sweep-seed 1"),
    (dict(seeds="2,x"), "--seeds must be comma-separated integers"),
    (dict(sgd_inner_lrs="0.1,-1"), "--sgd-inner-lrs wants comma-separated positive numbers"),
    (dict(sgd_inner_lrs="", adam_inner_lrs=""), "at least one inner setting"),
    (dict(sgd_inner_lrs="0.1,0.1"), "listed twice"),
    (dict(ad_steps="1,2"), "--ad-steps must hold 0"),
    (dict(corpus="nope"), "not found"),
    (dict(device="gpu"), "--device must be cpu or cuda"),
    (dict(nsp=2), "--nsp must be 0 or 1"),
    (dict(fp16=1), "--fp16 1 needs --device cuda"),
    (dict(supervised_tasks="SST-2,NOPE"), "--supervised-tasks: unknown GLUE task 'NOPE'"),
    (dict(heldout_tasks="RTE,rte"), "--heldout-tasks lists a task twice"),
    (dict(heldout_tasks="RTE,CoLA"), "must not hold a supervised task (CoLA)"),
    (dict(heldout_tasks=""), "--heldout-tasks is empty"),
    (dict(supervised_updates=0), "--supervised-updates must be a positive integer"),
    (dict(glue_max_rows=-1), "--glue-max-rows must be >= 0"),
    (dict(supervised_sampling_alpha=-0.5), "--supervised-sampling-alpha must be >= 0"),
    (dict(probe_max_train=-1), "--probe-max-train must be >= 0"),
    (dict(supervised_tasks="", probe_max_train=40), "--probe-max-train needs --ft-tasks or --supervised-tasks"),
    (dict(ft_seeds=0), "give --ft-seeds >= 1, --fs-sizes or --probe-max-train"),
])
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(MetaConfigError, match=re.escape(message)):
        ve.settings_for(True, overrides, SHARED_DATA)


@needs_data
def test_the_probe_alone_can_judge_the_glue_checkpoints(tmp_path):
    """--probe-max-train N adds evaluate's probe (train capped at N) to the GLUE
    measurements, and is enough without fine-tuning or few-shot; 0 (the default, and
    what an OUT from before the setting was made with) leaves it out."""
    exp = _quick_experiment(tmp_path, ft_seeds=0, probe_max_train=40, ft_tasks="RTE")
    assert ve.measurements(exp) == ["probe"] and measurement_names(exp, ["probe"]) == ["probe"]
    settings = glue_settings(exp, [], "eval-glue", ve.measurements(exp), ["RTE"])
    assert settings.measurements == ["probe"] and settings.probe_max_train == 40
    assert "probe" not in ve.measurements(_quick_experiment(tmp_path / "default"))
    assert ve.ADDED_SETTINGS["probe_max_train"] == 0 == ve.MODES["full"]["probe_max_train"]


@needs_data
def test_no_supervised_phase_needs_no_held_out_tasks():
    _, derived = ve.settings_for(True, dict(supervised_tasks="", heldout_tasks=""), SHARED_DATA)
    assert derived["supervised_tasks"] == derived["heldout_tasks"] == []
    _, derived = ve.settings_for(True, dict(supervised_tasks="sst2, cola"), SHARED_DATA)
    assert derived["supervised_tasks"] == ["SST-2", "CoLA"]


@needs_data
def test_supervised_task_sampling_is_a_setting_and_older_outs_read_as_its_old_value(tmp_path):
    """--supervised-sampling-alpha reaches fairseq-train; an OUT made before the setting
    existed (its settings.json lacks it) was made with 0.5, the value then hard-coded."""
    def experiment_with(**overrides):
        return _quick_experiment(tmp_path / "out", **overrides)

    selected = ve.SWEEP_KINDS["sgd"] | {"alpha": 0.1, "name": "sgd-0.1"}
    for alpha in (0.0, 0.5):
        exp = experiment_with(supervised_sampling_alpha=alpha)
        exp.derived["init"] = {"model": "model.pt", "flags": [], "max_positions": 32}  # no pre-training needed
        cmd = [str(x) for x in ve.supervised_cmd(exp, 1, 0, selected)[1]]
        assert cmd[cmd.index("--task-sampling-alpha") + 1] == str(alpha)
    experiment.check_settings_file(experiment_with(), added=ve.ADDED_SETTINGS)
    path = tmp_path / "out" / "settings.json"
    before = json.loads(path.read_text())
    del before["supervised_sampling_alpha"]
    path.write_text(json.dumps(before))
    experiment.check_settings_file(experiment_with(supervised_sampling_alpha=0.5), added=ve.ADDED_SETTINGS)
    with pytest.raises(MetaConfigError, match=re.escape("other settings (supervised_sampling_alpha)")):
        experiment.check_settings_file(experiment_with(supervised_sampling_alpha=0.0), added=ve.ADDED_SETTINGS)


@needs_data
def test_the_supervised_equal_examples_baseline_continues_k0_to_twice_its_updates(tmp_path):
    """s{seed}-k0-2U is s{seed}-k0's command continued: the same flags but the start
    (its checkpoint_last.pt, nothing reset), the save directory and 2U updates; once it
    has a checkpoint of its own, a re-run continues from that."""
    exp = _quick_experiment(tmp_path)
    s = exp.settings
    exp.derived["init"] = {"model": "model.pt", "flags": [], "max_positions": 32}
    selected = ve.SWEEP_KINDS["reptile"] | {"alpha": 0.1, "name": "reptile0.1"}
    name, k0, _, _ = ve.supervised_cmd(exp, 2, 0, selected)
    name2, cont, log, done = ve.supervised_equal_examples_cmd(exp, 2, selected)
    k0, cont = [str(x) for x in k0], [str(x) for x in cont]
    run = tmp_path / "supervised"
    assert (name, name2) == ("supervised s2-k0", "supervised s2-k0-2U")
    assert (log, done) == (run / "s2-k0-2U" / "train.log", run / "s2-k0-2U" / ".done")

    def without(cmd, *flags):
        out = list(cmd)
        for flag in flags:
            i = out.index(flag)
            del out[i:i + 2]
        return out

    assert cont[cont.index("--restore-file") + 1] == str(run / "s2-k0" / "checkpoints" / "checkpoint_last.pt")
    assert cont[cont.index("--max-update") + 1] == str(2 * s["supervised_updates"])
    assert cont[cont.index("--save-dir") + 1] == str(run / "s2-k0-2U" / "checkpoints")
    assert cont[cont.index("--meta-train-steps") + 1] == "0" and not any(f.startswith("--reset") for f in cont)
    assert without(cont, "--restore-file", "--max-update", "--save-dir") == without(
        k0, "--finetune-from-model", "--max-update", "--save-dir")
    own = run / "s2-k0-2U" / "checkpoints" / "checkpoint_last.pt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"")
    cont = [str(x) for x in ve.supervised_equal_examples_cmd(exp, 2, selected)[1]]
    assert cont[cont.index("--restore-file") + 1] == str(own)
    # evaluated under their own labels, after the equal-updates pairs
    labels = [label for label, _ in ve.supervised_checkpoints(exp)]
    assert labels == ["s1-sup-k0", "s1-sup-k1", "s2-sup-k0", "s2-sup-k1", "s1-sup-k0-2U", "s2-sup-k0-2U", "init"]


def test_a_report_of_an_out_without_the_equal_examples_runs_says_how_to_add_them(tmp_path):
    exp = types.SimpleNamespace(settings={"sweep_seed": 1}, derived={"fresh_seeds": []}, out=tmp_path)
    for run in ("k0", "k1"):
        log = tmp_path / "supervised" / f"s1-{run}" / "train.log"
        log.parent.mkdir(parents=True)
        log.write_text(_valid(4, 0.5, **{"valid_SST-2_accuracy": "60.1"}) + "\n")
    with pytest.raises(MetaConfigError, match=re.escape("s1-k0-2U/train.log: run the same command without "
                                                        "--report-only to add the equal-examples runs")):
        ve.supervised_training(exp)
    log = tmp_path / "supervised" / "s1-k0-2U" / "train.log"
    log.parent.mkdir()
    log.write_text(_valid(8, 0.4, **{"valid_SST-2_accuracy": "61.0"}) + "\n")
    assert ve.supervised_training(exp) == {
        "s1-sup-k0": {"update": 4, "valid_SST-2_accuracy": 60.1}, "s1-sup-k1": {"update": 4, "valid_SST-2_accuracy": 60.1},
        "s1-sup-k0-2U": {"update": 8, "valid_SST-2_accuracy": 61.0}}


def test_own_task_comparisons_are_paired_by_seed_at_equal_updates_and_examples():
    exp = types.SimpleNamespace(settings={"sweep_seed": 1}, derived={"fresh_seeds": [2, 3]})
    valid = {f"s{seed}-sup-{run}": {"update": 10, "valid_CoLA_mcc": value + seed}
             for seed in (1, 2, 3) for run, value in (("k0", 0.0), ("k1", 10.0), ("k0-2U", 4.0))}
    valid["s3-sup-k1"]["valid_CoLA_mcc"] = 16.0
    out = ve.supervised_own_task_comparisons(exp, valid)
    assert set(out) == {"own task, valid_CoLA_mcc: equal updates, seeds 1,2,3",
                        "own task, valid_CoLA_mcc: equal examples, seeds 1,2,3"}
    updates = out["own task, valid_CoLA_mcc: equal updates, seeds 1,2,3"]
    assert updates["treatment_scores"] == {"1": 11.0, "2": 12.0, "3": 16.0}
    assert updates["baseline_scores"] == {"1": 1.0, "2": 2.0, "3": 3.0}
    assert updates["mean"] == pytest.approx(11.0) and updates["wins"] == 3
    examples = out["own task, valid_CoLA_mcc: equal examples, seeds 1,2,3"]
    assert examples["mean"] == pytest.approx(7.0) and examples["baseline"] == "s{seed}-sup-k0-2U"


def test_a_chain_of_steps_runs_in_order_and_stops_at_its_first_failure(tmp_path):
    """run_parallel's lists: the second step of a chain starts after the first has finished
    (it fails unless the first one's file exists); a failed step keeps the rest of its chain
    from running, not the other steps; the failure is raised at the end."""
    def step(name, code):
        return (name, [sys.executable, "-c", code], tmp_path / name / "log", tmp_path / name / ".done")

    made = tmp_path / "made"
    later = step("later", f"import pathlib; assert pathlib.Path({str(made)!r}).read_text() == 'x'")
    experiment.run_parallel([[step("first", f"import time, pathlib; time.sleep(1); "
                                            f"pathlib.Path({str(made)!r}).write_text('x')"), later]], jobs=2)
    assert (tmp_path / "later" / ".done").exists()
    never = tmp_path / "never"
    with pytest.raises(MetaConfigError, match="broken failed"):
        experiment.run_parallel([[step("broken", "raise SystemExit(3)"),
                                  step("after", f"open({str(never)!r}, 'w')")],
                                 step("beside", "pass")], jobs=2)
    assert not never.exists() and not (tmp_path / "after" / "log").exists()
    assert (tmp_path / "beside" / ".done").exists() and not (tmp_path / "broken" / ".done").exists()


@needs_data
def test_every_run_command_sets_max_positions_once(tmp_path):
    """From scratch, the runs' block length; with --init-from, the import's own value from
    model_args.txt, or its max positions where model_args.txt names none."""
    exp = _quick_experiment(tmp_path)
    s = exp.settings
    selected = ve.SWEEP_KINDS["sgd"] | {"alpha": 0.1, "name": "sgd0.1"}

    def values(cmd):
        cmd = [str(x) for x in cmd[1]]
        return [cmd[i + 1] for i, flag in enumerate(cmd) if flag == "--max-positions"]

    assert values(ve.train_cmd(exp, 1, 1, selected)) == [str(s["tokens_per_sample"])]
    for flags, expected in ((["--arch", "imported_roberta", "--max-positions", "512"], "512"),
                            (["--arch", "imported_roberta"], "128")):
        exp.derived["init"] = {"model": "model.pt", "flags": flags, "max_positions": int(expected)}
        for cmd in (ve.train_cmd(exp, 1, 0), ve.train_cmd(exp, 1, 1, selected),
                    ve.supervised_cmd(exp, 1, 1, selected), ve.supervised_equal_examples_cmd(exp, 1, selected)):
            assert values(cmd) == [expected], cmd[0]


@needs_data
def test_the_adaptation_headline_is_measured_on_the_pre_training_block_length():
    s, derived = ve.settings_for(True, {}, SHARED_DATA)
    exp = types.SimpleNamespace(settings=s, derived=derived)
    assert ve.adaptation_block_tokens(exp) is None  # from scratch: max positions = tokens per sample
    exp.derived = {**derived, "init": {"max_positions": 512}}  # an import's positions, 32-token runs
    assert ve.adaptation_block_tokens(exp) == s["tokens_per_sample"] - 1 == 31


def test_bad_input_on_the_command_line_is_one_line_and_creates_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _run("--quick", "--out-dir", out, "--data-root", tmp_path / "nope")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("reproduce_verdict.py: error: corpus") and "not found" in err[0]
    assert not out.exists()


@needs_data
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_device_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    proc = _run("--quick", "--out-dir", out, "--device", "cuda")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "--device cuda: torch sees no CUDA device" in err[0]
    assert not out.exists()
    # the settings themselves are valid: a GPU run's report can be rebuilt here
    settings, _ = ve.settings_for(True, dict(device="cuda", fp16=1), SHARED_DATA)
    assert settings["device"] == "cuda"


# --------------------------------------------------------------------------- #
# --quick end to end
# --------------------------------------------------------------------------- #
def _last_valid(log_path, update):
    found = None
    for line in log_path.read_text().splitlines():
        if "| valid | " in line:
            row = json.loads(line.split("| valid | ", 1)[1])
            if int(row["valid_num_updates"]) == update:
                found = float(row["valid_loss"])
    return found


@needs_data
@pytest.mark.slow
def test_quick_end_to_end_then_only_the_deleted_step_runs_again(tmp_path):
    out = tmp_path / "verdict"
    proc = _run("--quick", "--out-dir", out, "--jobs", 2)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads((out / "results.json").read_text())
    s = result["settings"]
    u, block = s["updates"], s["batch_size"] * s["tokens_per_sample"]
    candidates = ["s1-k1-sgd0.1", "s1-k1-adam1e-3"]

    # the selection, recomputed from the raw logs: both runs validated at U
    losses = {c: _last_valid(out / "pretrain" / c / "train.log", u) for c in candidates}
    best = min(losses, key=lambda c: (losses[c], candidates.index(c)))
    selection = json.loads((out / "selection.json").read_text())
    assert selection["update"] == u and selection["valid_loss"] == losses
    assert selection["selected"] == best and result["selection"] == selection
    chosen = best.split("-k1-", 1)[1]
    other = next(c for c in candidates if c != best)

    # the sweep rows: k = 0, the selected setting (as s1-k1), the other, k = 2, second order
    rows = {r["label"]: r for r in result["sweep"]}
    assert list(rows) == ["s1-k0", "s1-k1", other, f"s1-k2-{chosen}", f"s1-k1-{chosen}-second"]
    assert rows["s1-k1"]["selected"] and rows["s1-k1"]["run"] == best
    raw = json.loads((out / "eval" / "results.json").read_text())["measurements"]["adaptation"]["raw"]
    column = result["headline_column"]
    assert column == "t=2"
    for label, row in rows.items():
        assert row["valid_loss"] == _last_valid(out / "pretrain" / row["run"] / "train.log", u)
        assert row[column]["mean"] == pytest.approx(statistics.fmean(raw[label][column].values()))
        if row["k"]:
            for key in ("adaptation_gain", "inner_move", "outer_move", "support_loss",
                        "valid_adapted_loss"):
                assert row[key] is not None and row[key] == row[key], (label, key)
            diffs = [raw[label][column][e] - raw["s1-k0"][column][e] for e in raw[label][column]]
            assert row["vs_k0"]["mean"] == pytest.approx(statistics.fmean(diffs))

    # every checkpoint evaluated; equal tokens: k = 1 at U read as many tokens as k = 0 at 2U
    labels = {"s1-k0", "s1-k0-2U", "s1-k1", "s2-k0", "s2-k0-2U", "s2-k1", other,
              f"s1-k2-{chosen}", f"s1-k1-{chosen}-second"}
    labels |= {f"s{x}-{y}" for x in (1, 2) for y in ("k0-nsp", "k0-nsp-2U", "k1-nsp")}
    assert set(raw) == labels
    for seed in (1, 2):
        assert result["tokens"][f"s{seed}-k0"] == u * block
        assert result["tokens"][f"s{seed}-k0-2U"] == result["tokens"][f"s{seed}-k1"] == 2 * u * block

    # the verdict comparisons, recomputed from the per-seed evaluation numbers
    comparisons = result["comparisons"]
    assert set(comparisons) == {f"{m}: {c}" for m in (f"headline {column}", "headline t=0", "valid at θ")
                                for c in (f"equal updates ({u}), seeds 1,2",
                                          f"equal updates ({u}), fresh seeds 2",
                                          f"equal tokens (k = 0 at {2 * u}), seeds 1,2")}

    def score(label):
        return statistics.fmean(raw[label][column].values())

    c = comparisons[f"headline {column}: equal tokens (k = 0 at {2 * u}), seeds 1,2"]
    assert c["seeds"] == ["1", "2"]
    assert c["mean"] == pytest.approx(statistics.fmean(score(f"s{x}-k1") - score(f"s{x}-k0-2U")
                                                       for x in (1, 2)))
    c = comparisons[f"headline {column}: equal updates ({u}), fresh seeds 2"]
    assert c["seeds"] == ["2"] and c["mean"] == pytest.approx(score("s2-k1") - score("s2-k0"))
    # MLM + NSP: the same pair per seed, trained with NSP, evaluated and compared
    for seed in (1, 2):
        for name in (f"s{seed}-k0-nsp", f"s{seed}-k1-{chosen}-nsp"):
            command = (out / "pretrain" / name / "command.sh").read_text()
            assert "--sentence-objective nsp" in command, name
        # sentence pairs vary in length: the tokens are the logged counts up to the update
        for label, name, update in ((f"s{seed}-k0-nsp", f"s{seed}-k0-nsp", u),
                                    (f"s{seed}-k0-nsp-2U", f"s{seed}-k0-nsp", 2 * u),
                                    (f"s{seed}-k1-nsp", f"s{seed}-k1-{chosen}-nsp", u)):
            rows = ve.read_run_log(out / "pretrain" / name / "train.log")[0]
            logged = sum(int(float(r["episode_tokens"])) for upd, r in rows.items() if upd <= update)
            assert result["tokens"][label] == logged > 0, label
    nsp_logs = {f"s{x}-{y}": out / "pretrain" / f"s{x}-{z}" / "train.log" for x in (1, 2)
                for y, z in (("k0-nsp", "k0-nsp"), ("k1-nsp", f"k1-{chosen}-nsp"))}

    def valid_field(log_path, update, key):
        rows = ve.read_run_log(log_path)[1]
        return float(rows[update][key])

    nsp = result["nsp_comparisons"]
    c = nsp[f"MLM + NSP, headline {column}: equal updates ({u}), seeds 1,2"]
    assert c["mean"] == pytest.approx(statistics.fmean(score(f"s{x}-k1-nsp") - score(f"s{x}-k0-nsp")
                                                       for x in (1, 2)))
    c = nsp[f"MLM + NSP, valid MLM at θ: equal tokens (k = 0 at {2 * u}), seeds 1,2"]
    assert c["mean"] == pytest.approx(statistics.fmean(
        valid_field(nsp_logs[f"s{x}-k1-nsp"], u, "valid_mlm_loss")
        - valid_field(nsp_logs[f"s{x}-k0-nsp"], 2 * u, "valid_mlm_loss") for x in (1, 2)))
    c = result["nsp_accuracy_comparisons"][f"MLM + NSP, valid NSP accuracy at θ: equal updates ({u}), seeds 1,2"]
    assert c["mean"] == pytest.approx(statistics.fmean(
        valid_field(nsp_logs[f"s{x}-k1-nsp"], u, "valid_nsp_accuracy")
        - valid_field(nsp_logs[f"s{x}-k0-nsp"], u, "valid_nsp_accuracy") for x in (1, 2)))

    # supervised: both phases start from s{seed}-k0 at U; k = 1 with the selected inner step
    for seed in (1, 2):
        start = experiment.checkpoint_file(out / "pretrain" / f"s{seed}-k0" / "checkpoints", u)
        for k in (0, 1):
            command = (out / "supervised" / f"s{seed}-k{k}" / "command.sh").read_text()
            assert f"--restore-file {start} " in command and "--tasks SST-2,MRPC,CoLA" in command
            assert f"--meta-train-steps {k} " in command
            assert (f"--inner-lr {selection['setting']['alpha']}" in command) == (k == 1)
        # the equal-examples baseline: k = 0 continued from its own end to 2U
        command = (out / "supervised" / f"s{seed}-k0-2U" / "command.sh").read_text()
        last = out / "supervised" / f"s{seed}-k0" / "checkpoints" / "checkpoint_last.pt"
        assert f"--restore-file {last} " in command and "--max-update 8 " in command
        log = (out / "supervised" / f"s{seed}-k0-2U" / "train.log").read_text()
        assert re.search(rf"Loaded checkpoint {re.escape(str(last))} \(epoch \d+ @ 4 updates\)", log)
    sup_raw = json.loads((out / "eval-supervised" / "results.json").read_text())
    sup_raw = sup_raw["measurements"]["finetune"]["raw"]
    assert set(sup_raw) == {f"s{x}-sup-{run}" for x in (1, 2) for run in ("k0", "k1", "k0-2U")}
    for label, columns in sup_raw.items():
        assert set(columns) == {"RTE", "STS-B", "average"}, label
    sup = result["supervised_comparisons"]
    assert set(sup) == {f"supervised{when}, fine-tuned on {c}: seeds 1,2" for c in ("RTE", "STS-B", "average")
                        for when in ("", " at equal examples (k = 0 at 2U)")}
    # each supervised run's last validation on its own tasks' dev sets
    assert set(result["supervised_valid"]) == set(sup_raw)
    for label, row in result["supervised_valid"].items():
        assert row["update"] == (8 if label.endswith("2U") else 4)
        assert {f"valid_{x}_{m}" for x in ("SST-2", "MRPC", "CoLA") for m in ("accuracy", "mcc")} <= set(row)
    for when, baseline in (("", "k0"), (" at equal examples (k = 0 at 2U)", "k0-2U")):
        c = sup[f"supervised{when}, fine-tuned on average: seeds 1,2"]
        assert c["mean"] == pytest.approx(statistics.fmean(
            statistics.fmean(sup_raw[f"s{x}-sup-k1"]["average"].values())
            - statistics.fmean(sup_raw[f"s{x}-sup-{baseline}"]["average"].values()) for x in (1, 2)))
    c = result["supervised_own_task_comparisons"]["own task, valid_CoLA_mcc: equal examples, seeds 1,2"]
    assert c["mean"] == pytest.approx(statistics.fmean(
        result["supervised_valid"][f"s{x}-sup-k1"]["valid_CoLA_mcc"]
        - result["supervised_valid"][f"s{x}-sup-k0-2U"]["valid_CoLA_mcc"] for x in (1, 2)))

    md = (out / "results.md").read_text()
    assert "| s1-k1 |" in md and "**Selection**" in md and "| comparison |" in md
    assert "## MLM + NSP" in md and "## Supervised" in md
    for png in ("verdict_headline_vs_tokens.png", "sweep_adaptation_gain.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    # resume: one verdict run's output (marker and checkpoints) deleted; only it runs again
    victim = f"s2-k1-{chosen}"
    shutil.rmtree(out / "pretrain" / victim)
    proc = _run("--quick", "--out-dir", out, "--jobs", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    running = [line for line in proc.stdout.splitlines() if ": running (log:" in line]
    assert len(running) == 1 and f"pretrain {victim}: running" in running[0], proc.stdout
    # the corpus, 6 other pre-training runs, 4 MLM + NSP runs, the GLUE data, 6 supervised runs
    assert proc.stdout.count("done before, skipped") == 1 + 6 + 4 + 1 + 6
    assert json.loads((out / "selection.json").read_text()) == selection
    # evaluation units are keyed on the checkpoint's content: at most the new one's two run
    units = re.search(r"(\d+) units, (\d+) done before", proc.stdout)
    assert units and int(units[1]) == 2 * len(labels) and int(units[2]) >= 2 * len(labels) - 2
    assert set(json.loads((out / "results.json").read_text())["headline_scores"]) == labels

    # other settings for the same OUT: one line, nothing run
    proc = _run("--quick", "--out-dir", out, "--updates", 12)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "other settings (updates)" in err[0], proc.stderr


@needs_data
def test_the_sweep_can_select_reptile_and_a_learned_inner_step(tmp_path):
    s, derived = ve.settings_for(True, dict(sgd_inner_lrs="0.1", adam_inner_lrs="",
                                            reptile_inner_lrs="0.1", learned_inner_lrs="0.01"),
                                 SHARED_DATA)
    by_name = {x["name"]: x for x in derived["inner_settings"]}
    assert list(by_name) == ["sgd0.1", "reptile0.1", "learned0.01"]
    flags = {name: [str(f) for f in ve.inner_flags(1, x)] for name, x in by_name.items()}
    assert "--meta-objective" not in flags["sgd0.1"] and "--inner-lr-learned" not in flags["sgd0.1"]
    assert flags["reptile0.1"][-2:] == ["--meta-objective", "reptile"]
    assert flags["learned0.01"][-2:] == ["--inner-lr-learned", "tensor"]
    assert ve.describe(1, by_name["reptile0.1"]) == "k = 1, Reptile, SGD α = 0.1"
    assert ve.describe(1, by_name["learned0.01"]) == "k = 1, SGD α learned per tensor from 0.01"

    exp = types.SimpleNamespace(settings=s, derived=derived)
    # Reptile runs k = 2 (at k = 1 it is k = 0), the other kinds k = 1
    assert [(k, x["name"]) for _, k, x, _ in ve.sweep_runs(exp)[1:]] == [
        (1, "sgd0.1"), (2, "reptile0.1"), (1, "learned0.01")]
    # Reptile is first order only, at k = 2 already: no extras at a Reptile selection,
    # and the fresh seeds run it at k = 2, evaluated as s{seed}-k1
    runs = ve.after_selection_runs(exp, by_name["reptile0.1"])
    assert runs == [(seed, k, x, "first") for seed in derived["fresh_seeds"]
                    for k, x in ((0, None), (2, by_name["reptile0.1"]))]
    rows = {label: (name, k) for label, name, _, k, _, _ in ve.checkpoints_to_evaluate(exp, by_name["reptile0.1"])}
    assert rows["s1-k1"] == ("s1-k2-reptile0.1", 2) and rows["s2-k1"] == ("s2-k2-reptile0.1", 2)
    assert "s1-k1-sgd0.1" in rows and not any("second" in name for name, _ in rows.values())
    exp.out = tmp_path
    start = tmp_path / "pretrain" / "s2-k0" / "checkpoints" / f"checkpoint_1_{s['updates']}.pt"
    start.parent.mkdir(parents=True)
    start.write_bytes(b"")
    flags = [str(f) for f in ve.supervised_cmd(exp, 2, 1, by_name["reptile0.1"])[1]]
    assert flags[flags.index("--meta-train-steps") + 1] == "2"
    runs = ve.after_selection_runs(exp, by_name["learned0.01"])
    assert (s["sweep_seed"], 1, by_name["learned0.01"], "second") in runs
    # what is queued behind the sweep is what every selection runs at k = 0
    for nsp in (0, 1):
        exp.settings = {**s, "nsp": nsp}
        for x in by_name.values():
            after = ve.after_selection_runs(exp, x) + ve.nsp_runs(exp, x)
            assert ve.selection_free_runs(exp) == [r for r in after if r[1] == 0], (nsp, x["name"])
    exp.settings = s
    # --extras 0: no k = 2 or second-order run, the fresh seeds' pairs unchanged
    s_no, derived_no = ve.settings_for(True, dict(sgd_inner_lrs="0.1", adam_inner_lrs="",
                                                  learned_inner_lrs="0.01", extras=0), SHARED_DATA)
    lean = ve.after_selection_runs(types.SimpleNamespace(settings=s_no, derived=derived_no),
                                   by_name["learned0.01"])
    assert lean == [r for r in runs if r[0] != s["sweep_seed"]] and lean
    with pytest.raises(MetaConfigError, match="--extras must be 0 or 1"):
        ve.settings_for(True, dict(extras=2), SHARED_DATA)
    with pytest.raises(MetaConfigError, match="--reptile-inner-lrs wants comma-separated positive"):
        ve.settings_for(True, dict(reptile_inner_lrs="0"), SHARED_DATA)
