"""Faults: a run killed with SIGKILL and resumed ends bit-identical to an
uninterrupted one; a NaN in an inner step goes through fairseq's
FloatingPointError path and the crash checkpoint holds θ, never θ_k; a script
stopped with SIGTERM leaves no process of its own behind."""
import json
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
import torch
from conftest import (HANG_GUARD_S, META, TINY_ROBERTA, TRAIN_DEFAULTS, assert_same_weights, cli_env,
                      model_weights, train)


def args_for(k):
    return [*META, "--meta-train-steps", str(k), "--inner-lr", "0.05", "--seed", "11",
            "--max-update", "8", "--save-interval-updates", "2", "--disable-validation"]


def kill_after_update(data, save_dir, args, update):
    """Start fairseq-train and SIGKILL it once it has logged *update*."""
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--save-dir", str(save_dir),
           *TRAIN_DEFAULTS, *TINY_ROBERTA, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=cli_env())
    try:
        for line in proc.stdout:
            if f"num_updates={update}," in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.mark.parametrize("k", [0, 1, 2])
def test_sigkill_then_resume_is_bit_identical(corpus, tmp_path, k):
    train(corpus, tmp_path / "whole", *args_for(k))
    kill_after_update(corpus, tmp_path / "killed", args_for(k), update=5)
    resumed = train(corpus, tmp_path / "killed", *args_for(k))
    assert "Loaded checkpoint" in resumed.stderr + resumed.stdout
    assert_same_weights(model_weights(tmp_path / "whole" / "checkpoint_last.pt"),
                        model_weights(tmp_path / "killed" / "checkpoint_last.pt"))


@pytest.mark.parametrize("objective", ["maml", "reptile"])
def test_nan_in_inner_step_saves_theta_in_crash_checkpoint(corpus, tmp_path, objective):
    # θ_1 = θ − 1e30·g is astronomically large: the second inner step's
    # gradients are NaN.
    proc = train(corpus, tmp_path, *META, "--meta-train-steps", "2", "--inner-lr", "1e30",
                 "--meta-objective", objective, "--max-update", "3", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "inner step 2/2: non-finite gradient" in log
    assert "FloatingPointError: gradients are Nan/Inf" in log
    crash = torch.load(tmp_path / "crash.pt", map_location="cpu", weights_only=False)
    assert crash["optimizer_history"][-1]["num_updates"] == 0
    for name, w in crash["model"].items():
        assert torch.isfinite(w).all() and w.abs().max() < 10, f"θ_k saved in crash.pt: {name}"


# A script's shape as evaluate --jobs 2 and reproduce_verdict have it: pool workers
# (spawned) each running a subprocess, and a subprocess of the script itself.
TREE_PROGRAM = textwrap.dedent("""
    import json, signal, subprocess, time
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    import psutil
    from fairseq_meta.run.cli import run

    def main(argv):
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            units = [pool.submit(subprocess.call, ["sleep", "3600"]) for _ in range(2)]
            own = subprocess.Popen(["sleep", "3600"])
            me = psutil.Process()
            # by name: a count of all children would also count multiprocessing's resource
            # tracker and could stop before a worker's sleep has started
            while sum(p.name() == "sleep" for p in me.children(recursive=True)) < 3:
                time.sleep(0.1)
            print(json.dumps([p.pid for p in me.children(recursive=True)]), flush=True)
            [u.result() for u in units]
        return 0

    # as a user's shell starts it (a background job of a non-interactive shell, as CI may
    # run this, inherits an ignored SIGINT, which run() rightly leaves ignored)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run("tree", main)
""")


# SIGINT ends in KeyboardInterrupt, which Python turns into its own death by SIGINT
# (130 in a shell)
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                      (signal.SIGINT, -signal.SIGINT)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_scripts_whole_process_tree(tmp_path, sig, code):
    # stderr to a file: a pipe would stay open as long as any leftover child holds it
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", TREE_PROGRAM], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=cli_env())
    descendants = []
    try:
        descendants = [psutil.Process(pid) for pid in json.loads(proc.stdout.readline())]
        proc.send_signal(sig)
        got = proc.wait(timeout=HANG_GUARD_S)
        _, alive = psutil.wait_procs(descendants, timeout=60)
        # a zombie waiting for an init that does not reap has run its course
        assert [p.cmdline() for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
        assert got == code, stderr.read_text()
    finally:
        for p in [proc.pid] + [d.pid for d in descendants]:
            try:
                psutil.Process(p).kill()
            except psutil.NoSuchProcess:
                pass


def test_run_keeps_an_ignored_sigterm_ignored_and_restores_handlers():
    from fairseq_meta.run.cli import run

    seen = {}
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        def main(argv):
            seen["during"] = signal.getsignal(signal.SIGTERM)
            return 0

        with pytest.raises(SystemExit):
            run("x", main)
        assert seen["during"] is signal.SIG_IGN
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

        def main_default(argv):
            seen["default"] = signal.getsignal(signal.SIGTERM)
            return 0

        with pytest.raises(SystemExit):
            run("x", main_default)
        assert seen["default"] not in (signal.SIG_DFL, signal.SIG_IGN)  # the tree stopper
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
