"""What fairseq needs from us to run on current torch: nothing else lives here.

Each fix is scoped as narrowly as we could make it and is covered by
``tests/test_checkpoint.py``.
"""
import inspect
import types

import torch


class _TorchTrustingFairseqCheckpoints(types.ModuleType):
    """``torch`` as seen from ``fairseq.checkpoint_utils`` only.

    torch >= 2.6 defaults ``torch.load(weights_only=True)``, which refuses the
    argparse/omegaconf objects every fairseq checkpoint holds ("Weights only load
    failed ... GLOBAL argparse.Namespace"), so fairseq can neither resume nor
    fine-tune from its own checkpoints. Upstream fairseq main passes
    ``weights_only=False`` in ``checkpoint_utils``; this proxy does the same for
    that one module and leaves ``torch.load`` everywhere else as it is.
    """

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def _torch_load_defaults_to_weights_only():
    params = inspect.signature(torch.load).parameters
    return "weights_only" in params and params["weights_only"].default is not False


def patch_fairseq_checkpoint_loading():
    """Let fairseq load its own checkpoints under torch >= 2.6. Idempotent.

    Applies only when torch defaults to ``weights_only`` loading and the
    installed fairseq does not already pass ``weights_only`` itself.
    """
    from fairseq import checkpoint_utils

    if isinstance(checkpoint_utils.torch, _TorchTrustingFairseqCheckpoints):
        return True
    if not _torch_load_defaults_to_weights_only():
        return False
    if "weights_only" in inspect.getsource(checkpoint_utils.load_checkpoint_to_cpu):
        return False
    checkpoint_utils.torch = _TorchTrustingFairseqCheckpoints()
    return True
