"""fairseq-train, plus every rank writes its final weights to
``<save-dir>/weights-rank<R>.pt`` (fairseq itself saves on rank 0 only), so a
test can compare the replicas of a data-parallel run."""
import os
import sys

import torch
from fairseq import checkpoint_utils
from fairseq_cli import train

_save_checkpoint = checkpoint_utils.save_checkpoint


def save_checkpoint_and_weights(cfg, trainer, epoch_itr, val_loss):
    result = _save_checkpoint(cfg, trainer, epoch_itr, val_loss)
    rank = trainer.data_parallel_rank
    os.makedirs(cfg.save_dir, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in trainer.get_model().state_dict().items()}
    torch.save(state, os.path.join(cfg.save_dir, f"weights-rank{rank}.pt"))
    return result


if __name__ == "__main__":
    checkpoint_utils.save_checkpoint = save_checkpoint_and_weights
    sys.argv[0] = "fairseq-train"
    train.cli_main()
