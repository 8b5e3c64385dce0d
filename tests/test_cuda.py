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
from conftest import META, REPO, USER_DIR, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

UPDATES = 20
GPU = ["--tokens-per-sample", "32", "--batch-size", "4", "--lr", "1e-3", "--log-format", "json",
       "--log-interval", "1", "--num-workers", "0", "--no-epoch-checkpoints",
       "--max-update", str(UPDATES), "--seed", "1",
       "--arch", "roberta_base", "--encoder-layers", "2", "--encoder-embed-dim", "64",
       "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2"]
# A small initial loss scale: a skipped (overflowed) first update would shift every
# batch against the fp32 run. The tiny model's gradients are far from overflowing at 4.
# bf16 is not here: fairseq-train's command line turns --bf16 into --tpu
# (fairseq/options.py), so bf16 on a GPU goes through fairseq-hydra-train (below).
LOW_PRECISION = {
    "--fp16": ["--fp16", "--fp16-init-scale", "4"],
    "--memory-efficient-fp16": ["--memory-efficient-fp16", "--fp16-init-scale", "4"],
    "--amp": ["--amp", "--amp-init-scale", "4"],
}
HYDRA_DEVICE = "common.cpu=false"


def run_gpu(data, save_dir, *args):
    proc = run_cli("train", [data, "--save-dir", save_dir, *GPU, *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def run_hydra_gpu(data, save_dir, *overrides):
    """configs/pretrain/meta_masked_lm_tiny.yaml at the size and length of GPU above."""
    proc = run_cli("hydra_train", [
        "--config-dir", REPO / "configs" / "pretrain", "--config-name", "meta_masked_lm_tiny",
        f"common.user_dir={USER_DIR}", f"task.data={data}", f"checkpoint.save_dir={save_dir}",
        f"hydra.run.dir={save_dir / 'hydra'}", HYDRA_DEVICE, "common.log_format=json",
        "common.log_interval=1", "common.tensorboard_logdir=null", "common.seed=1",
        f"optimization.max_update={UPDATES}", "optimization.lr=[1e-3]", "lr_scheduler._name=fixed",
        "lr_scheduler.warmup_updates=0", "task.tokens_per_sample=32",
        "dataset.batch_size=4", "dataset.num_workers=0", "model.encoder_embed_dim=64",
        "model.encoder_ffn_embed_dim=128", "checkpoint.no_save=true", *overrides])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def losses(log):
    """{num_updates: loss} from fairseq's per-update json records."""
    out = {}
    for line in log.splitlines():
        # fairseq-train: "... | train_inner | {...}"; fairseq-hydra-train: "[...][train_inner][INFO] - {...}"
        for tag in ("| train_inner |", "[train_inner][INFO] -"):
            if tag in line:
                record = json.loads(line.split(tag, 1)[1])
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


# second order with fp16 weights is refused (below); --amp keeps fp32 weights
CASES = [(p, "first") for p in LOW_PRECISION] + [("--amp", "second")]


@pytest.mark.parametrize("precision,order", CASES)
def test_mixed_precision_trains_on_gpu(corpus, tmp_path, precision, order):
    meta = (*META, "--meta-train-steps", "2", "--inner-lr", "1e-2", "--meta-order", order)
    ref = losses(run_gpu(corpus, tmp_path / "fp32", *meta))
    assert sorted(ref) == list(range(1, UPDATES + 1))
    low = losses(run_gpu(corpus, tmp_path / "low", *meta, *LOW_PRECISION[precision]))
    assert_trains_like_fp32(low, ref)


@pytest.mark.parametrize("order", ["first", "second"])
def test_bf16_trains_on_gpu(corpus, tmp_path, order):
    meta = ("task.meta_train_steps=2", "optimizer.inner_lr=1e-2", f"optimizer.meta_order={order}")
    ref = losses(run_hydra_gpu(corpus, tmp_path / "fp32", *meta))
    assert sorted(ref) == list(range(1, UPDATES + 1))
    low = losses(run_hydra_gpu(corpus, tmp_path / "low", *meta, "common.bf16=true"))
    assert_trains_like_fp32(low, ref)


@pytest.mark.parametrize("precision", ["--fp16", "--memory-efficient-fp16"])
def test_second_order_with_fp16_weights_is_refused(corpus, tmp_path, precision):
    """Measured on an H100 before the refusal: every update overflowed down to
    fairseq's minimum loss scale (FloatingPointError after 15 skipped updates)."""
    proc = run_cli("train", [corpus, "--save-dir", tmp_path, *GPU, *META, "--meta-train-steps", "1",
                             "--meta-order", "second", *LOW_PRECISION[precision]])
    assert proc.returncode != 0
    assert "--meta-order second cannot train with fp16 weights" in proc.stderr
    assert "Traceback" not in proc.stderr


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
