"""What fairseq needs from us to run on current torch: nothing else lives here.

Each fix is scoped as narrowly as we could make it and is covered by
``tests/test_checkpoint.py`` and ``tests/test_checkpoint_safety.py``.
"""
import types

import torch

from . import checkpoints


class _TorchLoadingCheckpointsWeightsOnly(types.ModuleType):
    """``torch`` as seen from ``fairseq.checkpoint_utils`` only.

    torch >= 2.6 defaults ``torch.load(weights_only=True)``, which refuses the
    ``argparse.Namespace`` that fairseq's checkpoints hold, so stock fairseq can
    neither resume nor fine-tune from its own checkpoints (upstream fairseq main
    passes ``weights_only=False`` instead, which lets a checkpoint run code).
    Here ``load`` is :func:`fairseq_meta.checkpoints.load_checkpoint`: weights-only
    with a minimal allowlist, whatever ``weights_only`` fairseq passes;
    ``torch.load`` everywhere else stays as it is.
    """

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        return checkpoints.load_checkpoint(f, map_location=map_location, **kwargs)


def patch_fairseq_checkpoint_loading():
    """Make fairseq load checkpoints weights-only with the plugin's allowlist
    (``fairseq_meta/checkpoints.py``). Idempotent."""
    from fairseq import checkpoint_utils

    if not isinstance(checkpoint_utils.torch, _TorchLoadingCheckpointsWeightsOnly):
        checkpoint_utils.torch = _TorchLoadingCheckpointsWeightsOnly()
    return True
