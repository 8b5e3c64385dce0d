"""What only a GPU can show; skipped where CUDA is absent (the CPU tests cover the
same code paths: test_precision.py, test_distributed.py).

A mixed-precision run must not only finish: it must train. Each run here is
compared with the same run in fp32 on the same GPU (same seed, same batches):
all updates applied, every loss finite, the loss down by a clear margin, and the
low-precision curve on top of the fp32 one.
"""
import json
import math

import pytest
import torch
from conftest import META, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

UPDATES = 20
GPU = ["--tokens-per-sample", "32", "--batch-size", "4", "--lr", "1e-3", "--log-format", "json",
       "--log-interval", "1", "--num-workers", "0", "--no-epoch-checkpoints",
       "--max-update", str(UPDATES), "--seed", "1",
       "--arch", "roberta_base", "--encoder-layers", "2", "--encoder-embed-dim", "64",
       "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2"]
# A small initial loss scale: a skipped (overflowed) first update would shift every
# batch against the fp32 run. The tiny model's gradients are far from overflowing at 4.
LOW_PRECISION = {
    "--fp16": ["--fp16", "--fp16-init-scale", "4"],
    "--memory-efficient-fp16": ["--memory-efficient-fp16", "--fp16-init-scale", "4"],
    "--bf16": ["--bf16"],
    "--amp": ["--amp", "--amp-init-scale", "4"],
}


def run_gpu(data, save_dir, *args):
    proc = run_cli("train", [data, "--save-dir", save_dir, *GPU, *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def losses(log):
    """{num_updates: loss} from fairseq's per-update json records."""
    out = {}
    for line in log.splitlines():
        if "| train_inner |" in line:
            record = json.loads(line.split("| train_inner |", 1)[1])
            out[int(record["num_updates"])] = float(record["loss"])
    return out


def assert_trains_like_fp32(low, ref):
    assert sorted(low) == list(range(1, UPDATES + 1)), f"updates applied: {sorted(low)}"
    assert all(math.isfinite(v) for v in low.values()), low
    def mean(curve, updates):
        return sum(curve[u] for u in updates) / len(updates)

    head, tail = range(1, 6), range(UPDATES - 4, UPDATES + 1)
    first, last, ref_last = mean(low, head), mean(low, tail), mean(ref, tail)
    assert last < first - 0.5, f"loss did not go down: first 5 {first:.3f}, last 5 {last:.3f}"
    # same θ0 and batch: only rounding separates the first losses
    assert low[1] == pytest.approx(ref[1], abs=0.05)
    assert last == pytest.approx(ref_last, abs=0.25)


@pytest.mark.parametrize("precision", list(LOW_PRECISION))
@pytest.mark.parametrize("order", ["first", "second"])
def test_mixed_precision_trains_on_gpu(corpus, tmp_path, precision, order):
    meta = (*META, "--meta-train-steps", "2", "--inner-lr", "1e-2", "--meta-order", order)
    ref = losses(run_gpu(corpus, tmp_path / "fp32", *meta))
    assert sorted(ref) == list(range(1, UPDATES + 1))
    low = losses(run_gpu(corpus, tmp_path / "low", *meta, *LOW_PRECISION[precision]))
    assert_trains_like_fp32(low, ref)


def test_preconditioned_inner_step_trains_in_fp16(corpus, tmp_path):
    meta = (*META, "--meta-train-steps", "1", "--inner-lr", "1e-3",
            "--inner-preconditioner", "adam")
    ref = losses(run_gpu(corpus, tmp_path / "fp32", *meta))
    low = losses(run_gpu(corpus, tmp_path / "low", *meta, *LOW_PRECISION["--fp16"]))
    assert_trains_like_fp32(low, ref)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_c10d_on_two_gpus(corpus, tmp_path):
    log = run_gpu(corpus, tmp_path, *META, "--meta-train-steps", "1", "--inner-lr", "1e-3",
                  "--ddp-backend", "pytorch_ddp", "--distributed-world-size", "2")
    assert "Expected to have finished reduction" not in log
    assert max(losses(log)) == UPDATES
