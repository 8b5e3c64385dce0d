"""Fine-tune a (meta-)pre-trained checkpoint on GLUE tasks and score the dev sets
(the work of ``scripts/finetune_glue.py``).

For every task x seed this runs ``fairseq-hydra-train`` (as ``python -m
fairseq_cli.hydra_train``) with the task's config (``<config-dir>/<config>.yaml``,
the config name from the task's record in :data:`fairseq_meta.prep.glue.GLUE_TASKS`;
``configs/finetune`` holds fairseq's RoBERTa GLUE recipe), adding what depends on
the checkpoint (its model size and max_positions, read from its own config),
then loads the run's ``checkpoint_best.pt``, predicts the dev split(s) and scores
them with the task's metrics. Results: ``OUT/results.json`` (per task, split and
seed, with mean and std over seeds) and ``OUT/results.md`` (a table). All metrics
are reported x 100 (accuracy in %, correlations x 100), as GLUE does.

Data: ``GLUE_DATA/<TASK>/`` as written by :mod:`fairseq_meta.prep.glue_data`. A task
outside the table is known by the record ``prepare_glue.py --task-file`` wrote
into its ``meta.json``. Without an explicit task list, every task directory with
a config is fine-tuned and the others are named as skipped.
"""
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MetaConfigError
from ..prep import glue
from .paths import CONFIG_DIR, REPO, USER_DIR

DEFAULT_CONFIG_DIR = CONFIG_DIR / "finetune"

# Model options that shape the encoder's weights (beyond the four sizes), passed on
# when the checkpoint's value differs from fairseq's `roberta` base architecture.
ARCH_KEYS = ["activation_fn", "encoder_normalize_before", "encoder_learned_pos",
             "layernorm_embedding", "no_scale_embedding", "untie_weights_roberta",
             "no_token_positional_embeddings"]
SIZE_KEYS = ["encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
             "encoder_attention_heads"]
EMBED_KEY = "encoder.sentence_encoder.embed_tokens.weight"
IMPORTED_ARCH = "imported_roberta"   # scripts/import_model.py's (models/imported_roberta.py)

QUICK_MAX_UPDATE = 4
QUICK_BATCH_SIZE = 8


def _quiet(message):
    pass


@dataclass
class Options:
    """What ``scripts/finetune_glue.py`` takes on its command line."""
    checkpoint: str
    glue_data: str
    out_dir: str
    tasks: list = None          # task names; None: every usable task in glue_data
    seeds: list = field(default_factory=lambda: [1])
    config_dir: str = str(DEFAULT_CONFIG_DIR)
    max_update: int = None
    quick: bool = False
    cpu: bool = False
    eval_batch_size: int = 32
    dry_run: bool = False
    overrides: list = field(default_factory=list)  # hydra overrides for every run


# --------------------------------------------------------------------------- #
# Checks (all before anything runs)
# --------------------------------------------------------------------------- #
def task_record(task_dir):
    """The GLUE task record of a prepared task directory: the table's entry for
    its name, else the record prepare_glue wrote into its meta.json; or None."""
    try:
        return glue.lookup(task_dir.name)
    except MetaConfigError:
        pass
    meta_path = task_dir / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise MetaConfigError(f"{meta_path}: not valid JSON ({e})")
        if isinstance(meta, dict) and isinstance(meta.get("task_record"), dict):
            return glue.task_from_dict(meta["task_record"], where=f"{meta_path} task_record")
    return None


def select_tasks(args, log=_quiet):
    """[(GlueTask, task directory)]: ``args.tasks`` (each must be usable), or
    every task directory in ``args.glue_data`` that can be fine-tuned (the others
    are logged as skipped, with the reason)."""
    glue_data = Path(args.glue_data)
    if args.tasks is not None:
        selected = []
        for name in args.tasks:
            task_dir = glue.find_task_dir(glue_data, name)
            if task_dir is None:
                task = glue.lookup(name).name  # an unknown name is the error to report
                raise MetaConfigError(f"no data for {task}: {glue_data / task} not found "
                                      "(make it with scripts/prepare_glue.py)")
            record = task_record(task_dir)
            if record is None:
                raise MetaConfigError(f"{task_dir}: unknown task (not in fairseq_meta/prep/glue.py, "
                                      "and its meta.json has no task_record)")
            if record.name not in [r.name for r, _ in selected]:
                selected.append((record, task_dir))
        if not selected:
            raise MetaConfigError("--tasks is empty")
        return selected
    selected, skipped = [], []
    for task_dir in sorted(p for p in glue_data.iterdir() if p.is_dir()):
        if not (task_dir / "input0").is_dir():
            continue
        record = task_record(task_dir)
        if record is None:
            skipped.append(f"{task_dir.name} (unknown task)")
        elif not (Path(args.config_dir) / f"{record.config}.yaml").is_file():
            skipped.append(f"{record.name} (no {record.config}.yaml in {args.config_dir})")
        elif not (task_dir / "input0" / "train.idx").is_file():
            skipped.append(f"{record.name} (evaluation data only)")
        else:
            selected.append((record, task_dir))
    if skipped:
        log(f"skipping {', '.join(skipped)}")
    if not selected:
        raise MetaConfigError(f"--glue-data {glue_data} holds no task that can be fine-tuned"
                              + (f" (skipped: {', '.join(skipped)})" if skipped else ""))
    return selected


def _get(obj, key, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict) or hasattr(obj, "keys"):
        try:
            return obj[key] if key in obj else default
        except Exception:  # omegaconf missing values
            return default
    return getattr(obj, key, default)


def check_vocabulary_size(pre, n_symbols, what, dict_path, fix):
    """The checkpoint's embedding rows must be the dictionary's symbols (fairseq's
    specials and <mask> counted): same ids, same size."""
    if n_symbols != pre["vocab"]:
        raise MetaConfigError(
            f"{what}: dictionary mismatch: the checkpoint's embeddings have {pre['vocab']} rows "
            f"but {dict_path} gives {n_symbols} symbols (with the specials and <mask>); {fix}")


def read_pretrained(path):
    """{'model': model cfg values, 'vocab': embedding rows, 'arch': name} of the checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise MetaConfigError(f"checkpoint {path} not found")
    from ..checkpoints import load_checkpoint

    try:
        state = load_checkpoint(path)
    except MetaConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error to the user
        raise MetaConfigError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0])
    if not isinstance(state, dict) or "model" not in state:
        raise MetaConfigError(f"{path} is not a fairseq checkpoint (no 'model' weights)")
    cfg = state.get("cfg")
    model_cfg = _get(cfg, "model") if cfg is not None else state.get("args")
    task_cfg = _get(cfg, "task") if cfg is not None else state.get("args")
    if model_cfg is None:
        raise MetaConfigError(f"{path} holds no model config (cfg.model / args)")
    arch = _get(model_cfg, "_name") or _get(model_cfg, "arch") or ""
    if not (str(arch).startswith("roberta") or arch == IMPORTED_ARCH):
        raise MetaConfigError(f"{path} is a {arch or 'non-RoBERTa'} model; GLUE fine-tuning here "
                              f"needs a RoBERTa encoder (--arch roberta_* or {IMPORTED_ARCH})")
    if EMBED_KEY not in state["model"]:
        raise MetaConfigError(f"{path} has no {EMBED_KEY}: not a RoBERTa encoder checkpoint")
    values = {}
    for key in SIZE_KEYS + ARCH_KEYS:
        value = _get(model_cfg, key)
        if value is None and key in SIZE_KEYS:
            raise MetaConfigError(f"{path}: model config lacks {key}")
        if value is not None:
            values[key] = value
    max_positions = _get(model_cfg, "max_positions") or _get(task_cfg, "tokens_per_sample")
    if max_positions is None:
        raise MetaConfigError(f"{path}: neither model.max_positions nor task.tokens_per_sample is set")
    values["max_positions"] = int(max_positions)
    if arch == IMPORTED_ARCH:
        values["layernorm_eps"] = float(_get(model_cfg, "layernorm_eps"))
    return {"model": values, "vocab": int(state["model"][EMBED_KEY].shape[0]), "arch": str(arch)}


def model_overrides(pre):
    """Hydra overrides that give the fine-tuning model the checkpoint's shape."""
    from argparse import Namespace

    from fairseq.models.roberta.model import base_architecture

    defaults = Namespace()
    base_architecture(defaults)
    model = pre["model"]
    out = [f"model.{k}={_hydra_value(model[k])}" for k in SIZE_KEYS]
    out += [f"++model.{k}={_hydra_value(model[k])}" for k in ARCH_KEYS
            if k in model and model[k] != getattr(defaults, k)]
    if "layernorm_eps" in model:
        # an imported encoder computes with its source's LayerNorm eps (models/imported_roberta.py)
        out += [f"model._name={IMPORTED_ARCH}", f"++model.layernorm_eps={model['layernorm_eps']!r}"]
    out.append(f"task.max_positions={model['max_positions']}")
    return out


def _hydra_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    value = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _override_value(overrides, key):
    """The last value given to ``key`` in hydra overrides (``key=v``, ``+key=v``, ``++key=v``)."""
    found = None
    for item in overrides:
        name, sep, value = item.lstrip("+").partition("=")
        if sep and name == key:
            found = value
    return found


def _bool(value):
    return str(value).strip().lower() in ("true", "1", "yes")


def check_task(record, task_dir, args, pre):
    """Everything one task (its :class:`~fairseq_meta.prep.glue.GlueTask` ``record``,
    data in ``task_dir``) needs, checked; returns its plan (paths, config values)."""
    task = record.name
    config_name = record.config
    config_path = Path(args.config_dir) / f"{config_name}.yaml"
    if not config_path.is_file():
        raise MetaConfigError(f"{task}: config {config_path} not found (--config-dir)")

    input0 = task_dir / "input0"
    if not (input0 / "train.idx").is_file() and (input0 / "valid.idx").is_file():
        raise MetaConfigError(f"{task}: {task_dir} holds evaluation data only (no train split): "
                              "nothing to fine-tune on")
    for sub in ["input0"] + ([] if record.single_sentence else ["input1"]):
        for name in ["dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx"]:
            if not (task_dir / sub / name).is_file():
                pair = " (a sentence-pair task)" if sub == "input1" else ""
                raise MetaConfigError(f"{task}{pair}: {task_dir / sub / name} is missing "
                                      "(make the data with scripts/prepare_glue.py)")

    # The task dictionary must be the pre-training one: same ids, same size.
    from fairseq.data import Dictionary

    try:
        dictionary = Dictionary.load(str(task_dir / "input0" / "dict.txt"))
    except Exception as e:  # noqa: BLE001
        raise MetaConfigError(f"{task_dir / 'input0' / 'dict.txt'}: {e}".splitlines()[0])
    # sentence_prediction adds <mask>, as masked_lm did
    check_vocabulary_size(pre, len(dictionary) + 1, task, task_dir / "input0" / "dict.txt",
                          "binarize the task with the pre-training dict.txt (prepare_glue.py --dict)")

    # Config (plus overrides after --) against meta.json and label/.
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_path)
    num_classes = _override_value(args.overrides, "task.num_classes")
    num_classes = int(num_classes) if num_classes is not None else int(cfg.task.num_classes)
    regression = _override_value(args.overrides, "criterion.regression_target")
    if regression is None:
        regression = bool(OmegaConf.select(cfg, "criterion.regression_target", default=False))
    regression = _bool(regression)
    where = f"{config_path.name}"
    if regression != record.regression:
        raise MetaConfigError(f"{task}: {where} sets regression_target={str(regression).lower()} but "
                              f"{task} is scored as "
                              f"{'regression' if record.regression else 'classification'}")

    meta_path = task_dir / "meta.json"
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise MetaConfigError(f"{meta_path}: not valid JSON ({e})")
        meta_regression = bool(meta.get("regression", False))
        if meta_regression != regression:
            raise MetaConfigError(
                f"{task}: label mismatch: {meta_path} says "
                f"{'regression' if meta_regression else 'classification'} but {where} "
                f"{'is regression (criterion.regression_target=true)' if regression else 'is classification'}")
        if not regression and "num_classes" in meta and int(meta["num_classes"]) != num_classes:
            raise MetaConfigError(f"{task}: label mismatch: {meta_path} has num_classes="
                                  f"{meta['num_classes']} ({', '.join(map(str, meta.get('labels', [])))}) "
                                  f"but {where} has task.num_classes={num_classes}")

    labels = None
    if regression:
        if num_classes != 1:
            raise MetaConfigError(f"{task}: regression needs task.num_classes=1, {where} has {num_classes}")
        for split in ["train", "valid"]:
            if not (task_dir / "label" / f"{split}.label").is_file():
                raise MetaConfigError(f"{task}: {task_dir / 'label' / f'{split}.label'} is missing "
                                      "(regression targets, one float per line)")
    else:
        label_dict = task_dir / "label" / "dict.txt"
        if not label_dict.is_file():
            raise MetaConfigError(f"{task}: {label_dict} is missing (classification labels)")
        labels = glue.read_label_dict(label_dict)
        if len(labels) != num_classes:
            raise MetaConfigError(f"{task}: label mismatch: {label_dict} has {len(labels)} labels "
                                  f"({', '.join(labels)}) but {where} has task.num_classes={num_classes}")
        if meta.get("labels") and sorted(map(str, meta["labels"])) != sorted(labels):
            raise MetaConfigError(f"{task}: label mismatch: {meta_path} labels {meta['labels']} "
                                  f"differ from {label_dict} ({', '.join(labels)})")
        if "f1" in record.metrics and sorted(labels) != ["0", "1"]:
            raise MetaConfigError(f"{task}: labels must be 0/1 for F1 of class 1, {label_dict} has "
                                  f"{', '.join(labels)}")
        for split in ["train", "valid"]:
            if not (task_dir / "label" / f"{split}.idx").is_file():
                raise MetaConfigError(f"{task}: {task_dir / 'label' / f'{split}.idx'} is missing")

    recipe_updates = int(cfg.optimization.max_update)
    recipe_warmup = int(OmegaConf.select(cfg, "lr_scheduler.warmup_updates", default=0) or 0)

    # Every dev split of the record that was prepared (MNLI: valid1 = mismatched).
    splits = ["valid"] + [s.name for s in record.splits if s.name not in ("train", "valid")
                          and (task_dir / "input0" / f"{s.name}.idx").is_file()]
    return {"task": task, "record": record, "dir": task_dir.resolve(), "config_name": config_name,
            "regression": regression, "num_classes": num_classes, "labels": labels,
            "splits": splits, "meta": meta,
            "warmup_ratio": recipe_warmup / recipe_updates if recipe_updates > 0 else 0.0}


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #
def run_overrides(plan, seed, run_dir, args, pre_overrides):
    ckpt_dir = run_dir / "checkpoints"
    out = [
        f"task.data={_hydra_value(str(plan['dir']))}",
        f"checkpoint.restore_file={_hydra_value(str(Path(args.checkpoint).resolve()))}",
        f"common.user_dir={_hydra_value(str(USER_DIR))}",
        f"checkpoint.save_dir={_hydra_value(str(ckpt_dir))}",
        f"hydra.run.dir={_hydra_value(str(run_dir / 'hydra'))}",
        f"common.seed={seed}",
        *pre_overrides,
        # Only checkpoint_best.pt is used; keep the disk footprint to one model.
        "checkpoint.no_last_checkpoints=true",
        "checkpoint.no_save_optimizer_state=true",
    ]
    if args.cpu:
        out += ["common.cpu=true", "common.fp16=false"]
    max_update = args.max_update
    if args.quick:
        max_update = max_update or QUICK_MAX_UPDATE
        out += [f"dataset.batch_size={QUICK_BATCH_SIZE}", "common.log_format=simple",
                "common.log_interval=1", "dataset.num_workers=0"]
    if max_update is not None:
        # Keep the recipe's warm-up share (6% of the updates; fairseq's QQP: 25%).
        out += [f"optimization.max_update={max_update}",
                f"lr_scheduler.warmup_updates={int(round(plan['warmup_ratio'] * max_update))}"]
    return out + list(args.overrides)


def train_command(plan, overrides, args):
    return [sys.executable, "-m", "fairseq_cli.hydra_train",
            "--config-dir", str(Path(args.config_dir).resolve()),
            "--config-name", plan["config_name"], *overrides]


def run_training(cmd, run_dir, label, restore_file):
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a stale checkpoint_best.pt must not be scored
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    (run_dir / "command.sh").write_text(shlex.join(cmd) + "\n", encoding="utf-8")
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise MetaConfigError(f"{label}: fairseq-hydra-train failed (exit {proc.returncode}); "
                              f"see {log_path}")
    if f"Loaded checkpoint {restore_file}" not in log_path.read_text(encoding="utf-8", errors="replace"):
        raise MetaConfigError(f"{label}: fine-tuning did not start from {restore_file} "
                              f"(no 'Loaded checkpoint' in {log_path})")
    best = ckpt_dir / "checkpoint_best.pt"
    if not best.is_file():
        raise MetaConfigError(f"{label}: training ended without {best} (no validation ran?); "
                              f"see {log_path}")
    return best, seconds


def evaluate(checkpoint, plan, use_cuda, batch_size):
    """{split: {metric: value x 100, 'n': examples}} of a fine-tuned checkpoint on the
    binarized dev split(s), by a forward pass through its classification head."""
    import numpy as np
    import torch
    from fairseq import checkpoint_utils, utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(plan["dir"])})
    model = models[0].float()
    model.eval()
    if use_cuda:
        model.cuda()
    head = cfg.criterion.classification_head_name if "classification_head_name" in cfg.criterion \
        else "sentence_classification_head"
    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
    info = {"num_updates": state["optimizer_history"][-1].get("num_updates"),
            "fairseq_best": (state.get("extra_state") or {}).get("best")}
    del state

    if not plan["regression"]:
        nspecial = task.label_dictionary.nspecial
        symbols = [task.label_dictionary[i + nspecial] for i in range(plan["num_classes"])]
        values = ([int(s) for s in symbols] if all(re.fullmatch(r"-?\d+", s) for s in symbols)
                  else list(range(len(symbols))))
        values = np.asarray(values)

    results = {}
    for split in plan["splits"]:
        task.load_dataset(split, combine=False)
        dataset = task.dataset(split)
        preds, targets = [], []
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                sample = dataset.collater([dataset[i] for i in
                                           range(start, min(start + batch_size, len(dataset)))])
                if use_cuda:
                    sample = utils.move_to_cuda(sample)
                logits, _ = model(**sample["net_input"], features_only=True,
                                  classification_head_name=head)
                if plan["regression"]:
                    preds.append(logits.view(-1).float().cpu().numpy())
                    targets.append(sample["target"].view(-1).float().cpu().numpy())
                else:
                    preds.append(values[logits.argmax(dim=-1).cpu().numpy()])
                    targets.append(values[sample["target"].view(-1).cpu().numpy()])
        preds, targets = np.concatenate(preds), np.concatenate(targets)
        scores = {k: 100.0 * v for k, v in glue.compute_metrics(plan["record"], preds, targets).items()}
        scores["n"] = int(len(preds))
        results[split] = scores
    return results, info


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #
def _finite(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def summarize(split_results, metric_names):
    """mean / std (sample std, ddof 1; 0 for one seed) over the seeds with a finite value."""
    out = {}
    for metric in metric_names:
        vals = [r[metric] for r in split_results.values() if _finite(r.get(metric))]
        n = len(vals)
        mean = sum(vals) / n if n else None
        std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else (0.0 if n else None))
        out[metric] = {"mean": mean, "std": std, "n_seeds": n}
    return out


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def write_reports(out_dir, report):
    (out_dir / "results.json").write_text(
        json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    lines = [
        "# GLUE dev results",
        "",
        f"Checkpoint: `{report['checkpoint']}`  ",
        f"Data: `{report['glue_data']}`  ",
        f"Seeds: {', '.join(map(str, report['seeds']))}"
        + ("  (quick smoke-test settings, not comparable)" if report["quick"] else ""),
        "",
        "Metrics x 100; mean ± sample std over seeds.",
        "",
        "| task | metric | mean ± std | n seeds | per seed |",
        "|---|---|---|---|---|",
    ]
    for task, entry in report["tasks"].items():
        for split, s in entry["splits"].items():
            for metric in entry["metrics"]:
                summary = s["summary"][metric]
                if summary["mean"] is None:
                    cell = "n/a"
                else:
                    cell = f"{summary['mean']:.2f} ± {summary['std']:.2f}"
                per_seed = ", ".join(
                    f"{r[metric]:.2f}" if _finite(r.get(metric)) else "n/a"
                    for r in s["seeds"].values())
                lines.append(f"| {s['name']} | {metric} | {cell} | {summary['n_seeds']} | {per_seed} |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- #
def finetune(args, log=_quiet):
    """Fine-tune and score every selected task x seed (see :class:`Options`);
    with ``args.dry_run`` only check and print the commands."""
    if not args.seeds:
        raise MetaConfigError("--seeds is empty")
    if args.max_update is not None and args.max_update < 1:
        raise MetaConfigError("--max-update must be >= 1")
    if not Path(args.config_dir).is_dir():
        raise MetaConfigError(f"--config-dir {args.config_dir} not found")
    glue_data = Path(args.glue_data)
    if not glue_data.is_dir():
        raise MetaConfigError(f"--glue-data {glue_data} not found")

    pre = read_pretrained(args.checkpoint)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        log("no CUDA device: training and evaluating on CPU in fp32 (as with --cpu)")
        args.cpu = True

    plans = [check_task(record, task_dir, args, pre) for record, task_dir in select_tasks(args, log)]
    pre_overrides = model_overrides(pre)
    out_dir = Path(args.out_dir).resolve()
    seeds = list(args.seeds)

    if args.dry_run:
        for plan in plans:
            for seed in seeds:
                run_dir = out_dir / plan["task"] / f"seed{seed}"
                print(shlex.join(train_command(plan, run_overrides(plan, seed, run_dir, args, pre_overrides), args)))
        return 0

    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "glue_data": str(glue_data.resolve()),
        "seeds": seeds,
        "quick": bool(args.quick),
        "max_update": args.max_update,
        "overrides": list(args.overrides),
        "scale": "metric x 100 (accuracy in %, F1/MCC/correlations x 100)",
        "pretrained_model": pre["model"],
        "tasks": {},
    }
    for plan in plans:
        task, record = plan["task"], plan["record"]
        names = list(record.metrics)
        entry = report["tasks"][task] = {"metrics": names, "config": plan["config_name"],
                                         "splits": {}}
        for split in plan["splits"]:
            entry["splits"][split] = {"name": record.split_title(split), "seeds": {}, "summary": {}}
        for seed in seeds:
            label = f"{task} seed {seed}"
            run_dir = out_dir / task / f"seed{seed}"
            cmd = train_command(plan, run_overrides(plan, seed, run_dir, args, pre_overrides), args)
            log(f"{label}: fine-tuning (log: {run_dir / 'train.log'})")
            best, seconds = run_training(cmd, run_dir, label, Path(args.checkpoint).resolve())
            scores, info = evaluate(best, plan, not args.cpu, args.eval_batch_size)
            record_json = {"scores": scores, "train_seconds": round(seconds, 1), **info,
                           "checkpoint": str(best)}
            (run_dir / "eval.json").write_text(
                json.dumps(_json_safe(record_json), indent=2) + "\n", encoding="utf-8")
            for split, s in scores.items():
                entry["splits"][split]["seeds"][str(seed)] = {
                    **{m: s[m] for m in names}, "n_examples": s["n"],
                    "num_updates": info["num_updates"], "train_seconds": round(seconds, 1)}
                entry["splits"][split]["summary"] = summarize(
                    entry["splits"][split]["seeds"], names)
                log(f"{label}: {entry['splits'][split]['name']} " + ", ".join(
                    f"{m} {s[m]:.2f}" for m in names) + f" (n={s['n']}, {seconds:.0f} s)")
            write_reports(out_dir, report)
    log(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    print((out_dir / "results.md").read_text(encoding="utf-8"))
    return 0
