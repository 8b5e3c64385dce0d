"""Faults: a run killed with SIGKILL and resumed ends bit-identical to an
uninterrupted one; a NaN in an inner step goes through fairseq's
FloatingPointError path and the crash checkpoint holds θ, never θ_k."""
import signal
import subprocess
import sys

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
