"""Loading checkpoints without running code from them.

A checkpoint is a pickle, and unpickling can call any function the file names.
Every checkpoint the plugin (or fairseq, with the plugin imported) loads goes
through :func:`load_checkpoint`: a ``weights_only`` load that, besides what
torch itself allows (tensors, containers, numbers, strings), accepts only the
globals in :data:`ALLOWLIST`. A file that names anything else is refused with
one line naming the global(s), before any of them is imported or called.

The opt-in for a file you trust: ``FAIRSEQ_META_TRUST_CHECKPOINTS=1``. With it a
refused file is loaded with ``weights_only=False`` (full unpickling, which can
run code from the file), and a warning names what the file holds; files that
pass the allowlist still load weights-only.
"""
import argparse
import logging
import os
import pickle
import re

import torch

from .errors import MetaConfigError

logger = logging.getLogger(__name__)

TRUST_ENV = "FAIRSEQ_META_TRUST_CHECKPOINTS"

# Globals that fairseq's own checkpoints hold beyond torch's default weights-only
# allowlist, found with torch.serialization.get_unsafe_globals_in_checkpoint on
# checkpoints of every kind the project writes or reads (closing note of issue 13).
ALLOWLIST = (
    # Written from the fairseq-train command line (not from fairseq-hydra-train): the
    # config sections cfg.model / cfg.task / ... are the parsed argparse.Namespace.
    # meta_masked_lm (k = 0, 1, 2, NSP, second order, memory-efficient fp16, with and
    # without optimizer state), meta_sentence_prediction, stock masked_lm, crash.pt.
    # Checkpoints written by fairseq-hydra-train (bf16 pre-training, fine-tuning with
    # configs/finetune) need nothing beyond torch's defaults.
    argparse.Namespace,
)


def _trusted():
    value = os.environ.get(TRUST_ENV, "")
    if value not in ("", "0", "1"):
        _refuse(f"{TRUST_ENV}={value!r}: expected 1 (trust the checkpoints loaded) or "
                "0 / unset (refuse any that needs more than the allowlist)")
    return value == "1"


def _name(f):
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, "name", None) or "<file object>"


def _rewind(f, position):
    if position is not None:
        f.seek(position)


def _allowlisted():
    """``safe_globals`` for the entries not allowed already: leaving the context
    removes what it added, so a global the user added themselves must stay."""
    already = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals([g for g in ALLOWLIST if g not in already])


def _refused_globals(f, position, error):
    """What the file names beyond the allowlist: all of it when the file is a
    zip checkpoint (a static read of the pickle, nothing imported), otherwise
    the one global torch stopped at."""
    try:
        _rewind(f, position)
        with _allowlisted():
            found = torch.serialization.get_unsafe_globals_in_checkpoint(f)
        if found:
            return sorted(found)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: fall back to torch's message
        pass
    return re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))


def _refuse(message):
    """One line: a ``MetaConfigError`` (the command line prints it as
    ``prog: error: ...``). Inside a fairseq-hydra-train job, hydra would print
    any exception with a traceback, so there it stops the program with the
    line instead (SystemExit passes through hydra's handlers)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        in_hydra_job = HydraConfig.initialized()
    except ImportError:
        in_hydra_job = False
    if in_hydra_job:
        import sys

        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "fairseq-hydra-train"
        raise SystemExit(f"{prog}: error: {message}")
    raise MetaConfigError(message)


def load_checkpoint(f, map_location="cpu", **kwargs):
    """``torch.load(f)`` of a checkpoint, weights-only with :data:`ALLOWLIST`.

    *f* is a path or a seekable binary file. Returns what ``torch.load``
    returns (the raw state dict; fairseq's ``load_checkpoint_to_cpu`` upgrades
    it further). Raises :class:`MetaConfigError` (one line) when the file needs
    a global outside the allowlist, unless ``FAIRSEQ_META_TRUST_CHECKPOINTS=1``.
    """
    kwargs.pop("weights_only", None)  # the policy here decides, not the caller
    trusted = _trusted()
    if not hasattr(torch.serialization, "safe_globals"):
        if trusted:
            return torch.load(f, map_location=map_location, weights_only=False, **kwargs)
        _refuse(f"torch {torch.__version__} cannot load checkpoints weights-only with an "
                f"allowlist (torch >= 2.5 can); upgrade torch, or set {TRUST_ENV}=1 if you "
                f"trust {_name(f)}")
    position = f.tell() if hasattr(f, "seek") else None
    try:
        with _allowlisted():
            return torch.load(f, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        refused = _refused_globals(f, position, error)
        what = ", ".join(refused) if refused else (
            str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0])
        if not trusted:
            allowed = ", ".join(f"{g.__module__}.{g.__qualname__}" for g in ALLOWLIST)
            _refuse(f"refusing to load checkpoint {_name(f)}: it needs {what}, which a "
                    f"weights-only load does not allow (unpickling could run code from the "
                    f"file; fairseq checkpoints need only {allowed}); if you trust this "
                    f"file, set {TRUST_ENV}=1 to load it anyway")
        logger.warning("%s=1: loading %s with weights_only=False (full unpickling); it needs %s",
                       TRUST_ENV, _name(f), what)
        _rewind(f, position)
        return torch.load(f, map_location=map_location, weights_only=False, **kwargs)
