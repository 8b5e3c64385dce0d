"""Which tasks and optimizers go together: the one check, run before training.

A meta task's inner steps need a meta optimizer (it owns the inner update rule),
and a meta optimizer's inner rule is only ever used by a meta task. Either side
may be stock fairseq, so both call this when they are built, each passing the
name of the other (read from the config through ``II(...)``); the messages live
here only. Components are told apart by class attributes (``is_meta_task``,
``is_meta_optimizer``), so this module imports neither side.
"""
from .errors import MetaConfigError

META_TASKS = "--task meta_masked_lm or meta_sentence_prediction"


def check_pairing(task_name=None, optimizer_name=None, meta_train_steps=None, ddp_backend=None,
                  meta_objective=None, meta_order=None, inner_lr_learned=None):
    """Raise :class:`MetaConfigError` for a task/optimizer/backend combination that
    cannot train. Names not registered or not resolved (None) are not checked."""
    _check_objective(meta_objective, meta_train_steps, meta_order, inner_lr_learned)
    from fairseq.optim import OPTIMIZER_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    task = TASK_REGISTRY.get(task_name)
    optimizer = OPTIMIZER_REGISTRY.get(optimizer_name)
    k = meta_train_steps
    if task is not None and optimizer is not None:
        meta_task = getattr(task, "is_meta_task", False)
        meta_optimizer = getattr(optimizer, "is_meta_optimizer", False)
        if meta_optimizer and not meta_task:
            raise MetaConfigError(
                f"--optimizer {optimizer_name} runs inner meta-train steps, which task "
                f"'{task_name}' does not provide; use a meta task ({META_TASKS}) "
                "or a plain optimizer (e.g. --optimizer adam)"
            )
        if meta_task and k and not meta_optimizer:
            raise MetaConfigError(
                f"--meta-train-steps {k} needs a meta optimizer for its inner steps, "
                f"got --optimizer {optimizer_name}; use --optimizer meta_adam "
                "(or --meta-train-steps 0 for plain multi-task training)"
            )
    if k and ddp_backend == "fully_sharded":
        raise MetaConfigError(
            f"--meta-train-steps {k} does not support --ddp-backend fully_sharded: inner "
            "steps update full, unsharded weights on every rank; use --ddp-backend "
            "pytorch_ddp (c10d) or legacy_ddp"
        )


def _check_objective(meta_objective, k, meta_order, inner_lr_learned):
    # k = 0 is plain training with either objective.
    if meta_objective != "reptile" or k == 0:
        return
    if meta_order == "second":
        raise MetaConfigError(
            "--meta-objective reptile is first order by construction (θ moves toward θ_k, "
            "no meta-test loss to differentiate through the inner steps); drop --meta-order second"
        )
    if inner_lr_learned not in (None, "none") and k is not None and k < 2:
        raise MetaConfigError(
            f"--inner-lr-learned {inner_lr_learned} with --meta-objective reptile needs "
            "--meta-train-steps >= 2: α is learned from the loss of each inner batch after "
            "the first, and with k = 1 there is none"
        )
