"""Fine-tuning on one GLUE task in this process, with fairseq's own machinery.

The configuration is the one ``fairseq-hydra-train --config-dir configs/finetune
--config-name <task>`` builds (fairseq's ``FairseqConfig`` schema, the task's
YAML, then the overrides, then fairseq's ``add_defaults``), with what
``scripts/finetune_glue.py`` adds for the checkpoint (model size,
max_positions, CPU). Training is fairseq's: ``tasks.setup_task``,
``task.build_model``, :class:`fairseq.trainer.Trainer`,
``Trainer.load_checkpoint`` with the config's reset flags, the epoch iterator
and ``Trainer.train_step``, the loop of ``fairseq_cli.train``. What differs from
the subprocess: nothing is written (no checkpoints; the dev set is scored from
the model in memory after each epoch), the training split may be a fixed subset
of its examples (few-shot draws, a cap for large tasks), and the process start-up
(seconds) is paid once instead of per run.
"""
import logging
import math
from pathlib import Path

import numpy as np

from ..prep import glue
from ..errors import MetaConfigError
from ..run.finetune import DEFAULT_CONFIG_DIR, USER_DIR, model_overrides
from .model import device_of

logger = logging.getLogger(__name__)


def compose_config(config_dir, config_name, overrides):
    """The fairseq config ``fairseq-hydra-train --config-dir D --config-name N
    overrides...`` runs with (resolved, struct)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.dataclass.initialize import add_defaults
    from fairseq.dataclass.utils import omegaconf_no_object_check
    from omegaconf import OmegaConf

    path = Path(config_dir) / f"{config_name}.yaml"
    if not path.is_file():
        raise MetaConfigError(f"config {path} not found")
    with omegaconf_no_object_check():
        cfg = OmegaConf.merge(OmegaConf.structured(FairseqConfig), OmegaConf.load(path))
        cfg.merge_with_dotlist([o.lstrip("+") for o in overrides])
        add_defaults(cfg)
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


def run_overrides(checkpoint, task_dir, seed, *, max_update, max_epoch, lr, batch_size,
                  warmup_ratio=0.06, device="cpu"):
    """The hydra overrides of one fine-tuning run of ``checkpoint`` (a
    :class:`~fairseq_meta.evaluation.model.Checkpoint`): what
    ``scripts/finetune_glue.py`` passes, plus the budget, the device (``cpu`` or
    ``cuda``; fp32 on either) and no checkpoint files."""
    return [
        f"task.data={task_dir}",
        f"common.user_dir={USER_DIR}",
        f"checkpoint.restore_file={checkpoint.path}",
        f"common.seed={seed}",
        *model_overrides({"model": checkpoint.model}),
        f"common.cpu={str(device == 'cpu').lower()}", "common.fp16=false",
        "dataset.num_workers=0",
        f"optimization.max_update={max_update}",
        f"optimization.max_epoch={max_epoch}",
        f"optimization.lr=[{lr}]",
        f"dataset.batch_size={batch_size}",
        # the recipe's 6% warm-up
        f"lr_scheduler.warmup_updates={int(round(warmup_ratio * max_update))}",
        "checkpoint.no_save=true",
        "common.log_format=none",
    ]


def run_config(checkpoint, task_dir, record, seed, *, config_dir=DEFAULT_CONFIG_DIR, **budget):
    """The config of one fine-tuning run on ``record`` (see :func:`run_overrides`)."""
    return compose_config(config_dir, record.config, run_overrides(checkpoint, task_dir, seed, **budget))


class IndexSubset:
    """A fixed subset of a fairseq dataset (few-shot draws, capped tasks)."""

    def __new__(cls, dataset, indices):
        from fairseq.data import BaseWrapperDataset

        class _Subset(BaseWrapperDataset):
            def __init__(self, dataset, indices):
                super().__init__(dataset)
                self.indices = np.asarray(indices, dtype=np.int64)

            def __getitem__(self, index):
                return self.dataset[int(self.indices[index])]

            def __len__(self):
                return len(self.indices)

            @property
            def sizes(self):
                return self.dataset.sizes[self.indices]

            def num_tokens(self, index):
                return self.dataset.num_tokens(int(self.indices[index]))

            def size(self, index):
                return self.dataset.size(int(self.indices[index]))

            def ordered_indices(self):
                # the wrapped SortDataset shuffles with the seed and epoch; keep that order
                order = self.dataset.ordered_indices()
                position = np.empty(len(self.dataset), dtype=np.int64)
                position[order] = np.arange(len(order))
                return np.argsort(position[self.indices], kind="stable")

            @property
            def supports_prefetch(self):
                return False

            def set_epoch(self, epoch):
                super().set_epoch(epoch)

        return _Subset(dataset, indices)


def label_values(task, record, num_classes):
    """Class id -> label value as the metrics expect (F1 counts label '1')."""
    import re

    if record.regression:
        return None
    nspecial = task.label_dictionary.nspecial
    symbols = [task.label_dictionary[i + nspecial] for i in range(num_classes)]
    if all(re.fullmatch(r"-?\d+", s) for s in symbols):
        return np.asarray([int(s) for s in symbols])
    return np.arange(len(symbols))


def predict(model, task, dataset, head, batch_size=64):
    """(raw outputs [n, classes], targets [n]) of a classification/regression head
    over a fairseq sentence_prediction dataset, in dataset order, on the model's device."""
    import torch
    from fairseq import utils

    device = device_of(model)

    outs, targets = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            sample = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            net_input = utils.apply_to_sample(lambda t: t.to(device), sample["net_input"])
            logits, _ = model(**net_input, features_only=True, classification_head_name=head)
            outs.append(logits.float().cpu().numpy())
            targets.append(sample["target"].view(-1).numpy())
    model.train(was_training)
    return np.concatenate(outs), np.concatenate(targets)


def score(record, outputs, targets, values):
    """GLUE score x 100 of predictions, and the metrics."""
    if record.regression:
        preds, gold = outputs.reshape(-1), targets.astype(float)
    else:
        preds, gold = values[outputs.argmax(-1)], values[targets.astype(int)]
    metrics = {k: 100.0 * v for k, v in glue.compute_metrics(record, preds, gold).items()}
    constant = bool(not record.regression and len(set(preds.tolist())) == 1)
    return glue.task_score(record, metrics), metrics, constant


class _QuietHeadDrops(logging.Filter):
    """While loading: fairseq warns once per weight of every classification head of the
    checkpoint that the fine-tuned model lacks (8 lines for a supervised checkpoint's
    SST-2 and CoLA heads, per run, hundreds in an evaluation's log). Dropping them is
    the design: the task gets a new head. Only that message is held back; a head of the
    task's own name with other dimensions is still reported."""

    LOGGER = "fairseq.models.roberta.model"

    def filter(self, record):
        message = record.getMessage()
        return not (message.startswith("deleting classification head")
                    and "not present in current model" in message)

    def __enter__(self):
        logging.getLogger(self.LOGGER).addFilter(self)

    def __exit__(self, *exc):
        logging.getLogger(self.LOGGER).removeFilter(self)


def finetune_run(checkpoint, task_dir, record, seed, *, epochs, lr, batch_size, min_updates=0,
                 train_indices=None, config_dir=DEFAULT_CONFIG_DIR, eval_every_epoch=True,
                 keep_model=False, device="cpu"):
    """Fine-tune ``checkpoint`` on ``record`` (data in ``task_dir``) with ``seed``
    for ``epochs`` epochs over the training examples (``train_indices`` if given,
    else all), at least ``min_updates`` updates; score the dev split.

    Returns {score, metrics, constant (one class predicted), updates,
    epochs (per-epoch dev scores), n_train}; with ``keep_model`` also the
    final weights (model_state, on the CPU)."""
    from fairseq import metrics, tasks, utils
    from fairseq.data import iterators
    from fairseq.trainer import Trainer

    # The size of the training set decides the schedule, so read it first.
    from fairseq.data import indexed_dataset

    full_size = len(indexed_dataset.MMapIndexedDataset(str(Path(task_dir) / "input0" / "train")))
    n_train = full_size if train_indices is None else len(train_indices)
    per_epoch = math.ceil(n_train / batch_size)
    max_update = max(min_updates, per_epoch * epochs)
    max_epoch = math.ceil(max_update / per_epoch)
    cfg = run_config(checkpoint, task_dir, record, seed, max_update=max_update, max_epoch=max_epoch,
                     lr=lr, batch_size=batch_size, config_dir=config_dir, device=device)

    # fairseq_meta itself is the user dir, imported already (the checkpoint loader)
    metrics.reset()
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid", combine=False, epoch=1)
    trainer = Trainer(cfg, task, model, criterion)
    import ast

    with _QuietHeadDrops():
        trainer.load_checkpoint(checkpoint.path, cfg.checkpoint.reset_optimizer,
                                cfg.checkpoint.reset_lr_scheduler,
                                ast.literal_eval(cfg.checkpoint.optimizer_overrides),
                                reset_meters=cfg.checkpoint.reset_meters)
    task.load_dataset("train", combine=True, epoch=1)
    if train_indices is not None:
        task.datasets["train"] = IndexSubset(task.dataset("train"), train_indices)
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=False)

    head = cfg.criterion.classification_head_name
    values = label_values(task, record, cfg.task.num_classes)
    valid = task.dataset("valid")
    per_epoch_scores = []
    last = None
    while epoch_itr.next_epoch_idx <= max_epoch and trainer.get_num_updates() < max_update:
        itr = epoch_itr.next_epoch_itr(fix_batches_to_gpus=False,
                                       shuffle=(epoch_itr.next_epoch_idx > cfg.dataset.curriculum))
        itr = iterators.GroupedIterator(itr, 1, skip_remainder_batch=cfg.optimization.skip_remainder_batch)
        trainer.begin_epoch(epoch_itr.epoch)
        for samples in itr:
            with metrics.aggregate("train_inner"):
                trainer.train_step(samples)
            if trainer.get_num_updates() >= max_update:
                break
        done = trainer.get_num_updates() >= max_update or epoch_itr.next_epoch_idx > max_epoch
        if eval_every_epoch or done:
            last = score(record, *predict(trainer.model, task, valid, head), values)
            per_epoch_scores.append({"epoch": epoch_itr.epoch, "updates": trainer.get_num_updates(),
                                     "score": last[0]})
        trainer.lr_step(epoch_itr.epoch, None)
        epoch_itr = trainer.get_train_iterator(epoch_itr.next_epoch_idx, load_dataset=False)
    if last is None:
        last = score(record, *predict(trainer.model, task, valid, head), values)
    out = {"score": last[0], "metrics": last[1], "constant": last[2],
           "updates": trainer.get_num_updates(), "epochs": per_epoch_scores, "n_train": n_train,
           "n_dev": len(valid)}
    if keep_model:
        out["model_state"] = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    return out
