"""What only a GPU can show; skipped where CUDA is absent (the CPU tests cover the
same code paths: test_precision.py, test_distributed.py)."""
import pytest
import torch
from conftest import META, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

GPU = ["--tokens-per-sample", "32", "--batch-size", "4", "--lr", "1e-3", "--log-format", "simple",
       "--log-interval", "1", "--num-workers", "0", "--no-epoch-checkpoints", "--max-update", "6",
       "--arch", "roberta_base", "--encoder-layers", "2", "--encoder-embed-dim", "64",
       "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2"]


def run_gpu(data, save_dir, *args):
    proc = run_cli("train", [data, "--save-dir", save_dir, *GPU, *args])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("precision", ["--fp16", "--memory-efficient-fp16", "--bf16", "--amp"])
@pytest.mark.parametrize("order", ["first", "second"])
def test_mixed_precision_trains_on_gpu(corpus, tmp_path, precision, order):
    log = run_gpu(corpus, tmp_path, *META, "--meta-train-steps", "2", "--inner-lr", "1e-3",
                  "--meta-order", order, precision)
    assert "num_updates=6" in log or "overflow" in log


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_c10d_on_two_gpus(corpus, tmp_path):
    log = run_gpu(corpus, tmp_path, *META, "--meta-train-steps", "1", "--inner-lr", "1e-3",
                  "--ddp-backend", "pytorch_ddp", "--distributed-world-size", "2")
    assert "Expected to have finished reduction" not in log
    assert "num_updates=6" in log
