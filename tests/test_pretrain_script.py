"""The main job (scripts/pretrain.sh -> fairseq_meta.run.pretrain): the thread policy,
training flags checked before any work, data reuse keyed on content, progress with an
ETA, a bounded number of checkpoints, and an end-of-run summary."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import HANG_GUARD_S, REPO
from fairseq_meta.run import pretrain
from fairseq_meta.errors import MetaConfigError
from fairseq_meta.run.threads import intra_op_threads, thread_env


# --------------------------------------------------------------------------- #
# Thread policy
# --------------------------------------------------------------------------- #
def test_omp_num_threads_wins_over_everything():
    assert intra_op_threads(jobs=4, environ={"OMP_NUM_THREADS": "3"}, cpus=2, load=5.0)[0] == 3
    assert intra_op_threads(jobs=1, environ={"OMP_NUM_THREADS": "2"}, cpus=8, load=0.0)[0] == 2


def test_parallel_jobs_get_one_thread_each():
    threads, why = intra_op_threads(jobs=2, environ={}, cpus=16, load=0.0)
    assert threads == 1 and "2 jobs" in why


@pytest.mark.parametrize("cpus, load, expected", [(2, 0.0, 2), (2, 1.0, 1), (2, 1.4, 1),
                                                   (2, 3.0, 1), (8, 2.6, 5), (4, 0.4, 4)])
def test_one_job_takes_the_idle_cores(cpus, load, expected):
    threads, why = intra_op_threads(jobs=1, environ={}, cpus=cpus, load=load)
    assert threads == expected and f"{cpus} CPUs" in why


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_omp_num_threads_is_an_error(value):
    with pytest.raises(MetaConfigError, match="OMP_NUM_THREADS must be a positive integer"):
        intra_op_threads(environ={"OMP_NUM_THREADS": value})


def test_thread_env_sets_every_library():
    env = thread_env(3, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}


# --------------------------------------------------------------------------- #
# Training flags and the schedule, checked before any work
# --------------------------------------------------------------------------- #
def _check(extra, max_update=500):
    args = pretrain.parse_training_flags(
        pretrain.training_argv("/nonexistent/data", "/nonexistent/run", max_update, extra))
    pretrain.check_schedule(args, max_update)
    return args


@pytest.mark.parametrize("extra, message", [
    (["--max-updates", "30"], "unknown flag --max-updates (did you mean --max-update?)"),
    (["--lr", "abc"], "argument --lr: invalid"),
    (["--arch", "nope"], "invalid choice: 'nope' (see fairseq-train --help)"),
    (["stray"], "unexpected argument stray"),
    (["--max-update", "30"], "set MAX_UPDATE=30 instead"),
    (["--total-num-update", "100"], "decays over --total-num-update 100 updates but training "
                                    "stops at 500"),
    (["--warmup-updates", "500"], "--warmup-updates 500 is not below the 500 updates"),
])
def test_bad_training_flags_are_one_line(extra, message):
    with pytest.raises(MetaConfigError) as e:
        _check(extra)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_good_extra_args_reach_the_run_and_the_schedule_follows_max_update():
    args = _check(["--sentence-objective", "nsp", "--inner-lr", "1e-2"], max_update=30)
    assert args.sentence_objective == "nsp" and args.inner_lr == 1e-2
    assert args.max_update == 30 and int(float(args.total_num_update)) == 30
    assert args.warmup_updates == 3 < 30
    assert _check([], max_update=500).warmup_updates == 50


def test_checkpoints_are_bounded():
    args = _check([])
    assert args.no_epoch_checkpoints and args.keep_interval_updates == 2


# --------------------------------------------------------------------------- #
# Data reuse keyed on content
# --------------------------------------------------------------------------- #
def _built(run_dir, inputs):
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "dict.txt").write_text("a 1\n")
    (run_dir / "data.inputs").write_text(json.dumps(pretrain.input_fingerprint(inputs)))


def test_same_content_is_reused_changed_content_is_rebuilt(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("one line of text\n")
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "a.txt").write_text("another\n")
    run_dir = tmp_path / "run"
    _built(run_dir, [str(text), str(folder)])
    assert pretrain.data_plan(run_dir, [str(text), str(folder)])[0] is True
    # same path, same size, new content: rebuilt
    stat = text.stat()
    text.write_text("one line of texT\n")
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert pretrain.data_plan(run_dir, [str(text), str(folder)])[0] is False
    text.write_text("one line of text\n")
    (folder / "b.txt").write_text("a new file in a directory\n")
    assert pretrain.data_plan(run_dir, [str(text), str(folder)])[0] is False


def test_changed_content_under_checkpoints_is_refused(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("one line of text\n")
    run_dir = tmp_path / "run"
    _built(run_dir, [str(text)])
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "checkpoint_last.pt").write_bytes(b"")
    text.write_text("other text\n")
    with pytest.raises(MetaConfigError, match=f"input content changed: {text}"):
        pretrain.data_plan(run_dir, [str(text)])


# --------------------------------------------------------------------------- #
# Progress
# --------------------------------------------------------------------------- #
def test_progress_shows_percent_eta_and_validations(monkeypatch):
    lines, clock = [], iter([100.0, 110.0, 130.0, 150.0, 170.0])
    monkeypatch.setattr(pretrain.time, "time", lambda: next(clock))
    progress = pretrain.Progress(40, log=lines.append)
    for u in (10, 20, 30):
        progress.feed("2026-01-01 | INFO | train_inner | " + json.dumps(
            {"num_updates": str(u), "loss": "9.5", "lr": "0.0005"}) + "\n")
    progress.feed("x | INFO | valid | " + json.dumps(
        {"valid_loss": "9.1", "valid_num_updates": "30", "valid_best_loss": "9.1"}) + "\n")
    progress.feed("epoch 001: 100%|#####| 5/5 [00:01<00:00]\n")  # anything else: not shown
    # first row: rate since start (10 updates in 10 s); later: since the first row
    assert lines[0] == "update 10/40 (25%): loss 9.500 bits, lr 5.00e-04, elapsed 10s, " \
                       "1.00 updates/s, ETA 30s"
    assert lines[1].endswith("elapsed 30s, 0.50 updates/s, ETA 40s")
    assert lines[2].startswith("update 30/40 (75%)") and lines[2].endswith("ETA 20s")
    assert lines[3] == "validation at update 30: loss 9.100 bits (best so far)"
    assert len(lines) == 4 and progress.valid == [(30, 9.1, 9.1)]


# --------------------------------------------------------------------------- #
# The script end to end
# --------------------------------------------------------------------------- #
def _pretrain_sh(run_dir, *inputs, **env):
    env = dict(os.environ, RUN_DIR=str(run_dir), OMP_NUM_THREADS="1", WORKERS="1", **env)
    return subprocess.run(["bash", str(REPO / "scripts" / "pretrain.sh"), *map(str, inputs)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=HANG_GUARD_S)


def test_misspelled_extra_arg_stops_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    proc = _pretrain_sh(run_dir, EXTRA_ARGS="--max-updates 30")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "pretrain.sh: error: EXTRA_ARGS: unknown flag --max-updates (did you mean --max-update?)"]
    assert "[pretrain]" not in proc.stdout and not run_dir.exists()


@pytest.mark.slow
def test_demo_run_says_what_it_did_and_keeps_few_checkpoints(tmp_path, wiki_lines):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(wiki_lines[:200]) + "\n")
    run_dir = tmp_path / "run"
    proc = _pretrain_sh(run_dir, text, MAX_UPDATE="30")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "threads: 1 (OMP_NUM_THREADS is set)" in out
    assert "30 updates, mini-batch 16 x 128 tokens, lr 0.0005 (polynomial_decay, warm-up 3)" in out
    assert "valid loss before training:" in out
    assert "update 30/30 (100%)" in out and "ETA" in out
    assert "valid loss: " in out and "at update 30; best" in out
    for what in ("evaluate:", "fine-tune:", "use:"):
        assert what in out
    # the model directory that fairseq's hub interface and transformers load
    # (tests/test_export.py loads them)
    assert {p.name for p in (run_dir / "model").iterdir()} >= {
        "model.pt", "dict.txt", "sentencepiece.bpe.model"}
    assert (run_dir / "huggingface" / "config.json").is_file()
    # what the console no longer shows; the full log keeps everything
    assert "tensorboardX" not in out + proc.stderr
    assert max(len(line) for line in out.splitlines()) < 600
    assert "'_name': 'meta_masked_lm'" in (run_dir / "train.log").read_text()
    # several epochs, saves every 10 updates: best, last and at most two others, no
    # per-epoch checkpoints (the flags before left one per epoch)
    assert "end of epoch 3 " in (run_dir / "train.log").read_text()
    ckpts = {p.name for p in (run_dir / "checkpoints").glob("*.pt")}
    assert {"checkpoint_best.pt", "checkpoint_last.pt"} <= ckpts and len(ckpts) <= 4
    assert all(re.fullmatch(r"checkpoint_\d+_(20|30)\.pt", c) for c in ckpts
               if c not in ("checkpoint_best.pt", "checkpoint_last.pt")), ckpts

    # the same input with other content (same path) is not trained over
    text.write_text("\n".join(wiki_lines[200:400]) + "\n")
    proc = _pretrain_sh(run_dir, text, MAX_UPDATE="40")
    assert proc.returncode == 2
    assert f"input content changed: {text}" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, line", [
    (15, 143, "pretrain.sh: terminated; run the same command again to resume from checkpoint_last.pt"),
    (2, 2, "pretrain.sh: error: interrupted; run the same command again to resume from checkpoint_last.pt"),
])
def test_a_signal_while_training_stops_fairseq_train_and_says_how_to_resume(tmp_path, wiki_lines,
                                                                            signum, code, line):
    import psutil

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(wiki_lines[:200]) + "\n")
    env = dict(os.environ, RUN_DIR=str(tmp_path / "run"), OMP_NUM_THREADS="1", WORKERS="1",
               MAX_UPDATE="100000")
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "pretrain.sh"), str(text)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, trainer = time.monotonic() + HANG_GUARD_S, None
        while trainer is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            trainer = next((p for p in psutil.Process(proc.pid).children(recursive=True)
                            if "fairseq_cli.train" in " ".join(p.cmdline())), None)
        assert trainer is not None, proc.communicate()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code and err.strip().splitlines()[-1] == line, err[-2000:]
    assert not trainer.is_running() or trainer.status() == psutil.STATUS_ZOMBIE
