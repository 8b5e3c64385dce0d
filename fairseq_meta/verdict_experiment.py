"""The meta-pretraining verdict of docs/results.md ("Verdict (issue 10)") as one
resumable command, ``scripts/reproduce_verdict.py``.

Stages (fairseq-train and scripts/prepare_corpus.py run as subprocesses through the
machinery of :mod:`fairseq_meta.experiment`: ``.done`` markers, ``--jobs``, one
thread per job, the settings file):

1. data      the Gutenberg books as one corpus (scripts/prepare_corpus.py) -> OUT/data
2. sweep     pre-training seed ``sweep_seed``: k = 0 to 2U updates (checkpoints every
             ``checkpoint_interval``, so U and 2U exist) and k = 1 first order for
             every inner setting (plain SGD α, Adam-preconditioned α) to U updates
3. select    among the k = 1 first-order sweep runs, the lowest validation loss at θ
             (``valid_loss`` of the ``| valid |`` log records) at the largest
             validation update that every one of them reached; ties go to the
             setting listed first                                  -> OUT/selection.json
4. verdict   k = 2 and k = 1 second order at the selected setting (seed ``sweep_seed``,
             U updates), and k = 0 (2U) and the selected k = 1 (U) for every fresh
             pre-training seed; with ``--nsp 1`` the same k = 0 / selected k = 1
             pair with ``--sentence-objective nsp`` for every seed (sweep seed too)
5. supervised unless ``--supervised-tasks`` is empty: those GLUE tasks binarized
             with the corpus dictionary (scripts/prepare_glue.py) -> OUT/glue, and
             ``meta_sentence_prediction`` on them with k = 0 and the selected k = 1,
             both from s{seed}-k0 at U, for every seed          -> OUT/supervised
6. evaluate  :func:`fairseq_meta.evaluation.evaluate`: adaptation on every
             pre-training checkpoint (-> OUT/eval); fine-tuning of the supervised
             checkpoints on ``--heldout-tasks`` (-> OUT/eval-supervised); resumable
             per unit
7. report    sweep table, verdict comparisons paired by pre-training seed
             (:mod:`fairseq_meta.evaluation.verdict`) for MLM, MLM + NSP and the
             supervised phase, and two plots
             -> OUT/results.md, results.json, verdict_headline_vs_tokens.png,
                sweep_adaptation_gain.png

Checkpoint labels of the evaluation: ``s{seed}-k0`` (k = 0 at U), ``s{seed}-k0-2U``
(k = 0 at 2U, the tokens of k = 1 at U), ``s{seed}-k1`` (the selected setting at U;
for the sweep seed this is the selected sweep run) and, for the other sweep runs,
``s{seed}-k{k}-{setting}[-second]``; MLM + NSP: ``s{seed}-k0-nsp``,
``s{seed}-k0-nsp-2U``, ``s{seed}-k1-nsp``; supervised: ``s{seed}-sup-k0``,
``s{seed}-sup-k1``. A checkpoint is evaluated once, under one label.
"""
import json
import math
import os
import sys
import time
from pathlib import Path

from . import experiment
from .cli import Cli
from .errors import MetaConfigError
from .experiment import REPO, USER_DIR, model_flags, run_parallel, run_step
from .threads import intra_op_threads, thread_env

cli = Cli("reproduce_verdict.py")

# Settings of the two modes; every one can be overridden on the command line.
# "full" is the hand-run design of docs/results.md (Verdict, issue 10).
MODES = {
    "full": dict(
        layers=2, embed_dim=128, ffn_dim=512, heads=2, tokens_per_sample=128, batch_size=16,
        lr=1e-3, warmup=500, updates=1500, checkpoint_interval=500, valid_interval=500,
        log_interval=100, dropout=0.1, weight_decay=0.01,
        sgd_inner_lrs="0.01,0.03,0.1,0.3", adam_inner_lrs="3e-4,1e-3,3e-3",
        sweep_seed=1, seeds="2,3,4", corpus="gutenberg", vocab_size=8000,
        spm_input_lines=300000, ad_steps="0,1,4,16,64", ad_seeds=5, ad_eval_blocks=256,
        ad_lr=5e-4, ad_batch_size=16, device="cpu", fp16=0,
        nsp=1, supervised_tasks="SST-2,MRPC,CoLA", heldout_tasks="RTE,STS-B",
        supervised_updates=400, supervised_lr=1e-4, glue_max_rows=0, ft_seeds=1, ft_epochs=3,
        ft_max_train=4000),
    "quick": dict(
        layers=1, embed_dim=32, ffn_dim=64, heads=2, tokens_per_sample=32, batch_size=4,
        lr=1e-3, warmup=2, updates=8, checkpoint_interval=4, valid_interval=4,
        log_interval=2, dropout=0.1, weight_decay=0.01,
        sgd_inner_lrs="0.1", adam_inner_lrs="1e-3",
        sweep_seed=1, seeds="2", corpus="gutenberg/nltk-selections/chesterton-thursday.txt",
        vocab_size=400, spm_input_lines=5000, ad_steps="0,1,2", ad_seeds=2, ad_eval_blocks=4,
        ad_lr=5e-4, ad_batch_size=4, device="cpu", fp16=0,
        nsp=1, supervised_tasks="SST-2,MRPC,CoLA", heldout_tasks="RTE,STS-B",
        supervised_updates=4, supervised_lr=1e-4, glue_max_rows=120, ft_seeds=1, ft_epochs=1,
        ft_max_train=100),
}
# The sweep table's adaptation gain, inner and outer move and support loss are means
# over the train_inner rows of the last 30% of the U updates (1050 < u <= 1500 at
# U = 1500, as in the hand-run table).
SUMMARY_WINDOW = 0.3
PRECONDITIONERS = {"sgd": "SGD", "adam": "Adam-preconditioned"}


def settings_for(quick, overrides, data_root):
    """The settings of a mode with ``overrides`` (None = the mode's value), checked.
    Returns (settings, derived): derived holds the parsed lists and paths."""
    s = experiment.mode_settings(MODES, quick, overrides, [
        "layers", "embed_dim", "ffn_dim", "heads", "tokens_per_sample", "batch_size", "updates",
        "checkpoint_interval", "valid_interval", "log_interval", "vocab_size", "spm_input_lines",
        "ad_seeds", "ad_eval_blocks", "ad_batch_size", "supervised_updates", "ft_seeds", "ft_epochs",
        "ft_max_train"])
    for key in ["warmup", "glue_max_rows"]:
        if s[key] < 0:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be >= 0 (got {s[key]})")
    if s["embed_dim"] % s["heads"]:
        raise MetaConfigError(f"--embed-dim {s['embed_dim']} is not divisible by --heads {s['heads']}")
    for key in ["checkpoint_interval", "valid_interval"]:
        if s["updates"] % s[key]:
            raise MetaConfigError(f"--updates {s['updates']} is not a multiple of "
                                  f"--{key.replace('_', '-')} {s[key]} (U and 2U need one)")
        if s[key] % s["log_interval"]:
            raise MetaConfigError(f"--{key.replace('_', '-')} {s[key]} is not a multiple of "
                                  f"--log-interval {s['log_interval']} (tokens are counted per log row)")
    for key in ["nsp", "fp16"]:
        if s[key] not in (0, 1):
            raise MetaConfigError(f"--{key} must be 0 or 1 (got {s[key]})")
    if s["fp16"] and s["device"] != "cuda":
        raise MetaConfigError("--fp16 1 needs --device cuda (fairseq's fp16 trains on a GPU)")
    for key in ["lr", "ad_lr", "supervised_lr"]:
        if not s[key] > 0:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be positive (got {s[key]})")
    if s["device"] not in ("cpu", "cuda"):
        raise MetaConfigError(f"--device must be cpu or cuda (got '{s['device']}')")
    for key in ["dropout", "weight_decay"]:
        if not 0 <= s[key] < 1:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be in [0, 1) (got {s[key]})")
    settings_list = []
    for precond in PRECONDITIONERS:
        text = s[f"{precond}_inner_lrs"].strip()
        for item in [x.strip() for x in text.split(",")] if text else []:
            try:
                alpha = float(item)
            except ValueError:
                alpha = float("nan")
            if not (alpha > 0 and math.isfinite(alpha)):
                raise MetaConfigError(f"--{precond}-inner-lrs wants comma-separated positive "
                                      f"numbers (got '{item}')")
            settings_list.append({"name": f"{precond}{item}", "preconditioner": precond,
                                  "alpha": alpha})
    if not settings_list:
        raise MetaConfigError("the sweep needs at least one inner setting "
                              "(--sgd-inner-lrs, --adam-inner-lrs)")
    names = [x["name"] for x in settings_list]
    if len(set(names)) != len(names):
        raise MetaConfigError(f"an inner setting is listed twice ({', '.join(names)})")
    try:
        seeds = [int(x) for x in s["seeds"].split(",")]
    except ValueError:
        raise MetaConfigError(f"--seeds must be comma-separated integers (got '{s['seeds']}')")
    if len(set(seeds)) != len(seeds) or s["sweep_seed"] in seeds:
        raise MetaConfigError(f"--seeds must be distinct and differ from --sweep-seed "
                              f"{s['sweep_seed']} (got {s['seeds']})")
    try:
        ad_steps = sorted({int(x) for x in s["ad_steps"].split(",")})
    except ValueError:
        raise MetaConfigError(f"--ad-steps must be comma-separated integers (got '{s['ad_steps']}')")
    if ad_steps[0] < 0 or 0 not in ad_steps or len(ad_steps) < 2:
        raise MetaConfigError(f"--ad-steps must hold 0 and a positive step count (got '{s['ad_steps']}')")
    data_root = Path(data_root)
    corpus = data_root / s["corpus"]
    if not corpus.exists():
        raise MetaConfigError(f"corpus {corpus} not found (--corpus relative to --data-root {data_root})")
    domain = {split: data_root / "wikitext-2" / f"{split}.txt" for split in ("valid", "test")}
    for path in domain.values():
        if not path.is_file():
            raise MetaConfigError(f"adaptation domain {path} not found (--data-root {data_root})")
    supervised, heldout = _glue_tasks(s, data_root)
    derived = {"inner_settings": settings_list, "fresh_seeds": seeds, "ad_step_list": ad_steps,
               "corpus_path": corpus, "domain": domain, "supervised_tasks": supervised,
               "heldout_tasks": heldout}
    return s, derived


def _glue_tasks(s, data_root):
    """(supervised tasks, held-out tasks) as canonical GLUE names; ([], []) when
    --supervised-tasks is empty (no supervised phase)."""
    from .glue import find_task_dir, lookup

    lists = []
    for key in ("supervised_tasks", "heldout_tasks"):
        names = [x.strip() for x in s[key].split(",") if x.strip()]
        try:
            lists.append([lookup(name).name for name in names])
        except MetaConfigError as e:
            raise MetaConfigError(f"--{key.replace('_', '-')}: {e}") from None
        if len(set(lists[-1])) != len(lists[-1]):
            raise MetaConfigError(f"--{key.replace('_', '-')} lists a task twice ({s[key]})")
    supervised, heldout = lists
    if not supervised:
        return [], []
    if not heldout:
        raise MetaConfigError("--heldout-tasks is empty: the supervised phase is judged on tasks "
                              "it did not train on")
    both = sorted(set(supervised) & set(heldout))
    if both:
        raise MetaConfigError(f"--heldout-tasks must not hold a supervised task ({', '.join(both)})")
    for name in supervised + heldout:
        if find_task_dir(data_root / "glue", name) is None:
            raise MetaConfigError(f"GLUE task {name}: {data_root / 'glue' / name} not found "
                                  f"(--data-root {data_root})")
    return supervised, heldout


class VerdictExperiment(experiment.Experiment):
    """experiment.Experiment plus the parsed settings (``derived``)."""

    def __init__(self, out, settings, derived, quick, jobs, data_root):
        super().__init__(out=out, settings=settings, quick=quick, jobs=jobs, data_root=data_root)
        self.derived = derived


# --------------------------------------------------------------------------- #
# The runs
# --------------------------------------------------------------------------- #
# A run is (seed, k, inner setting, order, objective); objective "mlm" or "nsp" (MLM + NSP).
def run_name(seed, k, setting=None, order="first", objective="mlm"):
    suffix = "-nsp" if objective == "nsp" else ""
    if k == 0:
        return f"s{seed}-k0{suffix}"
    return f"s{seed}-k{k}-{setting['name']}" + ("-second" if order == "second" else "") + suffix


def describe(k, setting=None, order="first", objective="mlm"):
    suffix = ", MLM + NSP" if objective == "nsp" else ""
    if k == 0:
        return "k = 0" + suffix
    text = f"k = {k}, {PRECONDITIONERS[setting['preconditioner']]} α = {setting['alpha']:g}"
    return text + (", second order" if order == "second" else "") + suffix


def inner_flags(k, setting, order="first"):
    """The meta-learning flags shared by pre-training and the supervised phase."""
    if k == 0:
        return ["--meta-train-steps", 0]
    flags = ["--meta-train-steps", k, "--inner-lr", setting["alpha"], "--meta-order", order]
    if setting["preconditioner"] == "adam":
        flags += ["--inner-preconditioner", "adam"]
    return flags


def device_flags(s):
    return ["--cpu"] if s["device"] == "cpu" else (["--fp16"] if s["fp16"] else [])


def train_cmd(exp, seed, k, setting=None, order="first", objective="mlm"):
    s, out = exp.settings, exp.out
    run_dir = out / "pretrain" / run_name(seed, k, setting, order, objective)
    max_update = 2 * s["updates"] if k == 0 else s["updates"]
    cmd = [sys.executable, "-m", "fairseq_cli.train", out / "data", "--user-dir", USER_DIR,
           "--task", "meta_masked_lm", "--criterion", "meta_masked_lm", *model_flags(s),
           "--tokens-per-sample", s["tokens_per_sample"], "--max-positions", s["tokens_per_sample"],
           "--batch-size", s["batch_size"], "--sample-break-mode", "none",
           "--lr", s["lr"], "--lr-scheduler", "fixed", "--warmup-updates", s["warmup"],
           "--adam-betas", "(0.9,0.98)", "--weight-decay", s["weight_decay"], "--clip-norm", "0",
           "--dropout", s["dropout"], "--max-update", max_update, "--num-workers", "0",
           "--save-dir", run_dir / "checkpoints", "--save-interval-updates", s["checkpoint_interval"],
           "--keep-interval-updates", "-1", "--no-epoch-checkpoints",
           "--validate-interval-updates", s["valid_interval"], "--log-format", "json",
           "--log-interval", s["log_interval"], "--seed", seed]
    cmd += device_flags(s)
    if objective == "nsp":
        cmd += ["--sentence-objective", "nsp"]
    cmd += inner_flags(k, setting, order)
    if k == 0:
        cmd += ["--optimizer", "adam"]
    else:
        cmd += ["--optimizer", "meta_adam", "--valid-adapt-steps", k,
                "--log-adaptation-interval", s["log_interval"]]
    return (f"pretrain {run_dir.name}", cmd, run_dir / "train.log", run_dir / ".done")


def supervised_cmd(exp, seed, k, selected):
    """meta_sentence_prediction on the supervised tasks from s{seed}-k0 at U, with k = 0
    or the selected inner setting; its checkpoint is ``checkpoint_last.pt``."""
    s, out = exp.settings, exp.out
    run_dir = out / "supervised" / f"s{seed}-k{k}"
    start = experiment.checkpoint_file(out / "pretrain" / run_name(seed, 0) / "checkpoints",
                                       s["updates"])
    cmd = [sys.executable, "-m", "fairseq_cli.train", out / "glue", "--user-dir", USER_DIR,
           "--task", "meta_sentence_prediction", "--criterion", "meta_sentence_prediction",
           "--optimizer", "meta_adam", "--tasks", ",".join(exp.derived["supervised_tasks"]),
           "--task-sampling-alpha", "0.5", *inner_flags(k, selected), *model_flags(s),
           "--max-positions", s["tokens_per_sample"], "--shorten-method", "truncate",
           "--batch-size", s["batch_size"], "--lr", s["supervised_lr"], "--lr-scheduler", "fixed",
           "--warmup-updates", max(1, s["supervised_updates"] // 10),
           "--max-update", s["supervised_updates"], "--num-workers", "0",
           "--restore-file", start, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
           "--reset-lr-scheduler", "--save-dir", run_dir / "checkpoints", "--no-epoch-checkpoints",
           "--log-format", "json", "--log-interval", s["log_interval"], "--seed", seed,
           *device_flags(s)]
    return (f"supervised {run_dir.name}", cmd, run_dir / "train.log", run_dir / ".done")


def sweep_runs(exp):
    """[(seed, k, setting, order)] of the first sweep (before the selection)."""
    seed = exp.settings["sweep_seed"]
    return [(seed, 0, None, "first")] + [(seed, 1, x, "first") for x in exp.derived["inner_settings"]]


def after_selection_runs(exp, selected):
    """[(seed, k, setting, order)]: k = 2 and second order at the selected setting, then
    k = 0 and the selected k = 1 for every fresh seed."""
    seed = exp.settings["sweep_seed"]
    runs = [(seed, 2, selected, "first"), (seed, 1, selected, "second")]
    for fresh in exp.derived["fresh_seeds"]:
        runs += [(fresh, 0, None, "first"), (fresh, 1, selected, "first")]
    return runs


def all_seeds(exp):
    return [exp.settings["sweep_seed"]] + exp.derived["fresh_seeds"]


def nsp_runs(exp, selected):
    """MLM + NSP: k = 0 (to 2U) and the selected k = 1 (U) for every seed; none when
    --nsp 0."""
    if not exp.settings["nsp"]:
        return []
    return [run for seed in all_seeds(exp)
            for run in ((seed, 0, None, "first", "nsp"), (seed, 1, selected, "first", "nsp"))]


def stage_data(exp, env):
    s, out = exp.settings, exp.out
    run_step("corpus", [sys.executable, REPO / "scripts" / "prepare_corpus.py", "--destdir",
                        out / "data", "--force", "--vocab-size", s["vocab_size"],
                        "--spm-input-lines", s["spm_input_lines"], "--workers", exp.jobs,
                        "--corpus", f"books={exp.derived['corpus_path']}"],
             out / "logs" / "corpus.log", out / "logs" / "corpus.done", env)


def stage_glue(exp, env):
    """The supervised tasks binarized with the pre-training dictionary -> OUT/glue."""
    s, out = exp.settings, exp.out
    cmd = [sys.executable, REPO / "scripts" / "prepare_glue.py",
           "--glue-dir", Path(exp.data_root) / "glue", "--spm-model", out / "data" / "spm.model",
           "--dict", out / "data" / "dict.txt", "--destdir", out / "glue", "--force",
           "--tasks", ",".join(exp.derived["supervised_tasks"]), "--workers", exp.jobs]
    if s["glue_max_rows"]:
        cmd += ["--max-rows", s["glue_max_rows"]]
    run_step("glue", cmd, out / "logs" / "glue.log", out / "logs" / "glue.done", env)


# --------------------------------------------------------------------------- #
# Logs and the selection
# --------------------------------------------------------------------------- #
def read_log(lines):
    """(train rows by update, valid rows by update) from fairseq json log lines. A
    resumed run repeats the updates after its last checkpoint: the last row of an
    update is kept (the pass that led to the checkpoints)."""
    rows = {"train": [], "valid": []}
    for line in lines:
        for kind, tag in (("train", "| train_inner | "), ("valid", "| valid | ")):
            if tag in line:
                try:
                    rows[kind].append(json.loads(line.split(tag, 1)[1]))
                except ValueError:
                    pass
    by_update = []
    for kind, key in (("train", "num_updates"), ("valid", "valid_num_updates")):
        out = {}
        for row in rows[kind]:
            try:
                out[int(row[key])] = row
            except (ValueError, KeyError):
                continue
        by_update.append(out)
    return tuple(by_update)


def read_run_log(path):
    path = Path(path)
    if not path.is_file():
        raise MetaConfigError(f"no training log {path}")
    return read_log(path.read_text(errors="replace").splitlines())


def select(valid_by_run):
    """The selection rule on {name: {update: valid row}} (names in sweep order): the
    lowest ``valid_loss`` at the largest update every run validated at; a tie goes to
    the run listed first. Returns {"update", "selected", "valid_loss": {name: loss}}."""
    if not valid_by_run:
        raise MetaConfigError("no sweep runs to select from")
    common = None
    for name, rows in valid_by_run.items():
        updates = {u for u, r in rows.items() if "valid_loss" in r}
        if not updates:
            raise MetaConfigError(f"sweep run {name} has no validation record")
        common = updates if common is None else common & updates
    if not common:
        raise MetaConfigError("the sweep runs share no validation update: "
                              + "; ".join(f"{n}: {sorted(r)}" for n, r in valid_by_run.items()))
    update = max(common)
    losses = {name: float(rows[update]["valid_loss"]) for name, rows in valid_by_run.items()}
    best = min(losses.values())
    selected = next(name for name, loss in losses.items() if loss == best)
    return {"update": update, "selected": selected, "valid_loss": losses}


def stage_select(exp):
    """OUT/selection.json, written once: a re-run keeps the selection it made."""
    path = exp.out / "selection.json"
    candidates = {run_name(*r): r[2] for r in sweep_runs(exp) if r[1] == 1}
    if path.exists():
        chosen = json.loads(path.read_text())
    else:
        logs = {name: read_run_log(exp.out / "pretrain" / name / "train.log")[1] for name in candidates}
        chosen = select(logs)
        chosen["rule"] = ("lowest valid_loss at θ among the k = 1 first-order sweep runs at the "
                          "largest validation update all of them reached; ties: first listed")
        chosen["setting"] = candidates[chosen["selected"]]
        path.write_text(json.dumps(chosen, indent=1) + "\n")
    if chosen["selected"] not in candidates:
        raise MetaConfigError(f"{path} selects {chosen['selected']}, not a sweep run of these settings")
    cli.log(f"selected: {chosen['selected']} (valid loss {chosen['valid_loss'][chosen['selected']]:.3f} "
            f"at update {chosen['update']})")
    return candidates[chosen["selected"]]


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
def checkpoints_to_evaluate(exp, selected):
    """[(label, run name, updates, k, description, seed)], one per checkpoint file."""
    s = exp.settings
    u = s["updates"]
    rows = []
    for seed in all_seeds(exp):
        rows.append((f"s{seed}-k0", run_name(seed, 0), u, 0, "k = 0", seed))
        rows.append((f"s{seed}-k0-2U", run_name(seed, 0), 2 * u, 0, "k = 0 at 2U", seed))
        rows.append((f"s{seed}-k1", run_name(seed, 1, selected), u, 1, describe(1, selected), seed))
    for run in sweep_runs(exp)[1:] + after_selection_runs(exp, selected)[:2]:
        seed, k, setting, order = run
        if k == 1 and order == "first" and setting["name"] == selected["name"]:
            continue  # evaluated as s{seed}-k1
        name = run_name(*run)
        rows.append((name, name, u, k, describe(k, setting, order), seed))
    return rows


def nsp_checkpoints_to_evaluate(exp, selected):
    """The MLM + NSP rows, as :func:`checkpoints_to_evaluate`: ``s{seed}-k0-nsp`` (U),
    ``s{seed}-k0-nsp-2U`` and ``s{seed}-k1-nsp`` (the selected setting at U)."""
    u, rows = exp.settings["updates"], []
    for seed, k, setting, order, objective in nsp_runs(exp, selected):
        name = run_name(seed, k, setting, order, objective)
        if k == 0:
            rows.append((f"s{seed}-k0-nsp", name, u, 0, describe(0, objective="nsp"), seed))
            rows.append((f"s{seed}-k0-nsp-2U", name, 2 * u, 0, "k = 0 at 2U, MLM + NSP", seed))
        else:
            rows.append((f"s{seed}-k1-nsp", name, u, k, describe(k, setting, order, objective), seed))
    return rows


def supervised_checkpoints(exp):
    """[(label, path)]: ``s{seed}-sup-k{k}`` for every seed, k = 0 and the selected k = 1."""
    if not exp.derived["supervised_tasks"]:
        return []
    return [(f"s{seed}-sup-k{k}", exp.out / "supervised" / f"s{seed}-k{k}" / "checkpoints"
             / "checkpoint_last.pt") for seed in all_seeds(exp) for k in (0, 1)]


def stage_evaluate_supervised(exp):
    """Fine-tuning (evaluate's measurement 1) of the supervised checkpoints on the
    held-out tasks -> OUT/eval-supervised."""
    from .evaluation import Settings, evaluate

    s = exp.settings
    items = [f"{label}={path}" for label, path in supervised_checkpoints(exp)]
    settings = Settings(
        checkpoints=items, out_dir=str(exp.out / "eval-supervised"), measurements=["finetune"],
        glue_dir=str(Path(exp.data_root) / "glue"), tasks=exp.derived["heldout_tasks"],
        dict_path=str(exp.out / "data" / "dict.txt"), spm_model=str(exp.out / "data" / "spm.model"),
        glue_max_rows=s["glue_max_rows"] or None, ft_seeds=s["ft_seeds"], ft_epochs=s["ft_epochs"],
        ft_max_train=s["ft_max_train"], jobs=exp.jobs)
    cli.log(f"evaluate: {len(items)} supervised checkpoints x {len(exp.derived['heldout_tasks'])} "
            f"held-out tasks x {s['ft_seeds']} fine-tuning seeds -> {exp.out / 'eval-supervised'}")
    evaluate(settings, log=cli.log)


def stage_evaluate(exp, selected):
    from .evaluation import Settings, evaluate

    s = exp.settings
    items = []
    for label, name, updates, _, _, _ in (checkpoints_to_evaluate(exp, selected)
                                          + nsp_checkpoints_to_evaluate(exp, selected)):
        path = experiment.checkpoint_file(exp.out / "pretrain" / name / "checkpoints", updates)
        items.append(f"{label}={path}")
    settings = Settings(
        checkpoints=items, out_dir=str(exp.out / "eval"), measurements=["adaptation"],
        domain_train=str(exp.derived["domain"]["valid"]), domain_eval=str(exp.derived["domain"]["test"]),
        ad_steps=exp.derived["ad_step_list"], ad_seeds=s["ad_seeds"], ad_lr=s["ad_lr"],
        ad_batch_size=s["ad_batch_size"], ad_eval_blocks=s["ad_eval_blocks"], jobs=exp.jobs)
    cli.log(f"evaluate: {len(items)} checkpoints x {s['ad_seeds']} adaptation seeds -> {exp.out / 'eval'}")
    evaluate(settings, log=cli.log)


# --------------------------------------------------------------------------- #
# Running it
# --------------------------------------------------------------------------- #
def run(exp, report_only=False):
    """Every stage; finished steps are skipped."""
    threads, why = intra_op_threads(jobs=exp.jobs)
    env = thread_env(threads, {**os.environ, "PYTHONUNBUFFERED": "1"})
    cli.log(f"output: {exp.out} ({'quick' if exp.quick else 'full'} mode, {exp.jobs} jobs at a "
            f"time, {threads} thread(s) each: {why})")
    start = time.time()
    if not report_only:
        stage_data(exp, env)
        run_parallel([train_cmd(exp, *r) for r in sweep_runs(exp)], exp.jobs, env)
    selected = stage_select(exp)
    if not report_only:
        run_parallel([train_cmd(exp, *r) for r in after_selection_runs(exp, selected)
                      + nsp_runs(exp, selected)], exp.jobs, env)
        if exp.derived["supervised_tasks"]:
            stage_glue(exp, env)
            run_parallel([supervised_cmd(exp, seed, k, selected) for seed in all_seeds(exp)
                          for k in (0, 1)], exp.jobs, env)
        stage_evaluate(exp, selected)
        if exp.derived["supervised_tasks"]:
            stage_evaluate_supervised(exp)
    write_report(exp, selected)
    cli.log(f"done in {time.time() - start:.0f}s; report: {exp.out / 'results.md'}")


# --------------------------------------------------------------------------- #
# The report (reads only)
# --------------------------------------------------------------------------- #
def tokens_at(train_rows):
    """{update: tokens processed up to it}, summed from ``episode_tokens`` (the count
    of every meta-train and meta-test mini-batch since the previous row). fairseq prints
    numbers with 6 significant digits ("1.2288e+06"): the count is exact below a million
    tokens per log row, to 6 digits above."""
    out, tokens = {0: 0}, 0
    for update in sorted(train_rows):
        tokens += round(float(train_rows[update].get("episode_tokens", 0)))
        out[update] = tokens
    return out


def _mean_of(rows, key):
    values = [float(r[key]) for r in rows if key in r]
    return sum(values) / len(values) if values else None


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def sweep_rows(exp, selected, raw, column):
    """The sweep table (sweep seed): one row per setting, k = 0 first."""
    from .evaluation import stats

    s = exp.settings
    u, seed = s["updates"], s["sweep_seed"]
    base = f"s{seed}-k0"
    entries = [(base, run_name(seed, 0), 0, "k = 0")]
    for label, name, _, k, text, row_seed in checkpoints_to_evaluate(exp, selected):
        if row_seed == seed and k > 0:
            entries.append((label, name, k, text))
    rows = []
    for label, name, k, text in entries:
        train, valid = read_run_log(exp.out / "pretrain" / name / "train.log")
        window = [r for upd, r in train.items() if u * (1 - SUMMARY_WINDOW) < upd <= u]
        at_u = valid.get(u, {})
        row = {"label": label, "run": name, "setting": text, "k": k, "updates": u,
               "selected": label == f"s{seed}-k1",
               "adaptation_gain": _mean_of(window, "adaptation_gain"),
               "inner_move": _mean_of(window, "inner_move"),
               "outer_move": _mean_of(window, "outer_move"),
               "support_loss": _mean_of(window, "meta_train_loss") if k else None,
               "valid_loss": float(at_u["valid_loss"]) if "valid_loss" in at_u else None,
               "valid_adapted_loss": (float(at_u["valid_adapted_loss"])
                                      if "valid_adapted_loss" in at_u else None)}
        for col in ("t=0", column):
            per_seed = raw.get(label, {}).get(col, {})
            row[col] = stats.summary(list(per_seed.values()))
        if label != base and label in raw and base in raw:
            row["vs_k0"] = stats.paired(raw[label][column], raw[base][column])
        else:
            row["vs_k0"] = None
        rows.append(row)
    return rows


def verdict_comparisons(exp, raw, column, valid_scores):
    """{name: verdict.compare(...)}: equal updates over every seed and over the fresh
    seeds only, equal tokens over every seed; the headline, t = 0 and valid at θ."""
    from .evaluation import verdict

    s = exp.settings
    u = s["updates"]
    every_seed = [str(x) for x in all_seeds(exp)]
    fresh = [str(x) for x in exp.derived["fresh_seeds"]]
    measures = [(f"headline {column}", verdict.checkpoint_scores(raw, column)),
                ("headline t=0", verdict.checkpoint_scores(raw, "t=0")),
                ("valid at θ", valid_scores)]
    out = {}
    for measure, scores in measures:
        out[f"{measure}: equal updates ({u}), seeds {','.join(every_seed)}"] = verdict.compare(
            scores, "s{seed}-k1", "s{seed}-k0", every_seed)
        out[f"{measure}: equal updates ({u}), fresh seeds {','.join(fresh)}"] = verdict.compare(
            scores, "s{seed}-k1", "s{seed}-k0", fresh)
        out[f"{measure}: equal tokens (k = 0 at {2 * u}), seeds {','.join(every_seed)}"] = verdict.compare(
            scores, "s{seed}-k1", "s{seed}-k0-2U", every_seed)
    return out


def nsp_comparisons(exp, raw, column, valid):
    """MLM + NSP, k = 1 (selected) − k = 0 paired by pre-training seed, at equal updates
    and equal tokens: ({name: compare} in bits, {name: compare} in accuracy points).
    ``valid``: {label: valid record at its update}."""
    from .evaluation import verdict

    u = exp.settings["updates"]
    seeds = [str(x) for x in all_seeds(exp)]
    valid_mlm = {l: float(r["valid_mlm_loss"]) for l, r in valid.items() if "valid_mlm_loss" in r}
    valid_nsp = {l: float(r["valid_nsp_accuracy"]) for l, r in valid.items() if "valid_nsp_accuracy" in r}
    tables = ({}, {})
    for table, measure, scores in ((0, f"headline {column}", verdict.checkpoint_scores(raw, column)),
                                   (0, "valid MLM at θ", valid_mlm),
                                   (1, "valid NSP accuracy at θ", valid_nsp)):
        for when, baseline in ((f"equal updates ({u})", "s{seed}-k0-nsp"),
                               (f"equal tokens (k = 0 at {2 * u})", "s{seed}-k0-nsp-2U")):
            tables[table][f"MLM + NSP, {measure}: {when}, seeds {','.join(seeds)}"] = verdict.compare(
                scores, "s{seed}-k1-nsp", baseline, seeds)
    return tables


def supervised_comparisons(exp):
    """{name: compare}: the supervised phase with the selected k = 1 − with k = 0, paired by
    pre-training seed, fine-tuned on each held-out task and their average (points)."""
    from .evaluation import verdict

    path = exp.out / "eval-supervised" / "results.json"
    if not path.is_file():
        raise MetaConfigError(f"{path} not found: the supervised evaluation has not run yet")
    raw = verdict.load_raw([path], "finetune")
    seeds = [str(x) for x in all_seeds(exp)]
    heldout = exp.derived["heldout_tasks"]
    columns = heldout + (["average"] if len(heldout) > 1 else [])
    return {f"supervised, fine-tuned on {col}: seeds {','.join(seeds)}": verdict.compare(
                verdict.checkpoint_scores(raw, col), "s{seed}-sup-k1", "s{seed}-sup-k0", seeds)
            for col in columns}


def plot_headline_vs_tokens(path, points, column):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (seed, p) in enumerate(sorted(points.items())):
        color = f"C{i}"
        ax.plot([p["k0"][0][0], p["k0"][1][0]], [p["k0"][0][1], p["k0"][1][1]], "o-", color=color,
                label=f"seed {seed}: k = 0 (U, 2U)")
        ax.plot([p["k1"][0]], [p["k1"][1]], "s", color=color, markersize=9, markerfacecolor="none",
                label=f"seed {seed}: k = 1 (U)")
    ax.set_xlabel("tokens processed in pre-training")
    ax.set_ylabel(f"headline: adaptation {column} (bits, lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_adaptation_gain(path, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for text, (updates, gains) in curves.items():
        ax.plot(updates, gains, ".-", label=text)
    ax.set_xlabel("update")
    ax.set_ylabel("adaptation gain (bits)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(exp, selected):
    """OUT/results.json, results.md and the two plots from the logs, selection.json
    and OUT/eval/results.json."""
    from .evaluation import verdict

    s, out = exp.settings, exp.out
    u = s["updates"]
    column = f"t={max(exp.derived['ad_step_list'])}"
    eval_json = out / "eval" / "results.json"
    if not eval_json.is_file():
        raise MetaConfigError(f"{eval_json} not found: the evaluation has not run yet")
    raw = verdict.load_raw([eval_json], "adaptation")
    selection = json.loads((out / "selection.json").read_text())
    evaluated = checkpoints_to_evaluate(exp, selected) + nsp_checkpoints_to_evaluate(exp, selected)
    missing = [label for label, *_ in evaluated if label not in raw]
    if missing:
        raise MetaConfigError(f"{eval_json} has no adaptation results for {', '.join(missing)}")
    logs = {name: read_run_log(out / "pretrain" / name / "train.log")
            for name in {name for _, name, *_ in evaluated}}
    valid_scores, valid_rows, tokens = {}, {}, {}
    for label, name, updates, _, _, _ in evaluated:
        train, valid = logs[name]
        valid_rows[label] = valid.get(updates, {})
        if "valid_loss" in valid_rows[label]:
            valid_scores[label] = float(valid_rows[label]["valid_loss"])
        tokens[label] = tokens_at(train).get(updates)
    sweep = sweep_rows(exp, selected, raw, column)
    comparisons = verdict_comparisons(exp, raw, column, valid_scores)
    nsp, nsp_accuracy = nsp_comparisons(exp, raw, column, valid_rows) if s["nsp"] else ({}, {})
    supervised = supervised_comparisons(exp) if exp.derived["supervised_tasks"] else {}
    headline = verdict.checkpoint_scores(raw, column)
    result = {"settings": {"quick": exp.quick, **s}, "selection": selection,
              "headline_column": column, "sweep": sweep, "tokens": tokens,
              "valid_loss": valid_scores, "headline_scores": headline, "comparisons": comparisons,
              "nsp_comparisons": nsp, "nsp_accuracy_comparisons": nsp_accuracy,
              "supervised_comparisons": supervised}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")

    points = {}
    for seed in all_seeds(exp):
        points[seed] = {"k0": [(tokens[f"s{seed}-k0"], headline[f"s{seed}-k0"]),
                               (tokens[f"s{seed}-k0-2U"], headline[f"s{seed}-k0-2U"])],
                        "k1": (tokens[f"s{seed}-k1"], headline[f"s{seed}-k1"])}
    plot_headline_vs_tokens(out / "verdict_headline_vs_tokens.png", points, column)
    curves = {}
    for row in sweep:
        if row["k"]:
            train = logs[row["run"]][0]
            pts = [(upd, float(r["adaptation_gain"])) for upd, r in sorted(train.items())
                   if "adaptation_gain" in r]
            curves[row["setting"]] = ([p[0] for p in pts], [p[1] for p in pts])
    plot_adaptation_gain(out / "sweep_adaptation_gain.png", curves)

    lines = [f"# Meta-pretraining verdict ({'quick' if exp.quick else 'full'} mode)", "",
             f"Written by scripts/reproduce_verdict.py; settings: {out / 'settings.json'}. "
             f"U = {u} updates; headline: masked-LM loss on WikiText-2 test after "
             f"{column[2:]} adaptation steps on WikiText-2 valid, {s['ad_seeds']} evaluation seeds.", "",
             f"## Sweep (pre-training seed {s['sweep_seed']})", "",
             f"Adaptation gain, inner move, outer move and support loss: means over the logged "
             f"updates in ({u * (1 - SUMMARY_WINDOW):g}, {u}]; valid at θ and adapted at update {u}; "
             f"headline mean ± sd over evaluation seeds; Δ: paired over evaluation seeds against "
             f"k = 0 (95% CI).", "",
             f"| setting | label | adaptation gain (bits) | inner move | outer move | support loss at θ "
             f"| valid at θ | valid adapted | headline t=0 | headline {column} | Δ {column} vs k = 0 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sweep:
        h = r[column]
        head = "—" if h["mean"] is None else f"{h['mean']:.3f} ± {_fmt(h['std'])}"
        d = r["vs_k0"]
        delta = "—" if d is None else (f"{verdict.fmt_signed(d['mean'])} [{verdict.fmt_signed(d['ci_low'])}, "
                                       f"{verdict.fmt_signed(d['ci_high'])}]")
        name = r["setting"] + (" (selected)" if r["selected"] else "")
        lines.append(f"| {name} | {r['label']} | {_fmt(r['adaptation_gain'], 4)} | {_fmt(r['inner_move'], 4)} "
                     f"| {_fmt(r['outer_move'], 4)} | {_fmt(r['support_loss'])} | {_fmt(r['valid_loss'])} "
                     f"| {_fmt(r['valid_adapted_loss'])} | {_fmt(r['t=0']['mean'])} | {head} | {delta} |")
    lines += ["", f"**Selection** ({selection['rule']}): {selection['selected']} at update "
              f"{selection['update']} (valid loss "
              + ", ".join(f"{n} {v:.3f}" for n, v in selection["valid_loss"].items()) + ").", "",
              "## Verdict: k = 1 (selected) against k = 0, paired by pre-training seed", "",
              "Treatment − baseline (lower is better for k = 1); 95% t-interval over pre-training "
              "seeds and the minimum detectable effect (paired, 80% power).", ""]
    lines += verdict.table(comparisons, "bits")
    if nsp:
        lines += ["", "## MLM + NSP: k = 1 (selected) against k = 0", "",
                  "The same verdict with `--sentence-objective nsp` for both (valid MLM: the MLM part "
                  "of the validation loss at θ). Equal tokens: k = 0 at 2U read as many sequences as "
                  "k = 1 at U; sentence pairs vary in length, so their token counts (results.json, "
                  "`tokens`) differ by a few per cent.", ""]
        lines += verdict.table(nsp, "bits") + ["", "NSP accuracy: higher is better.", ""]
        lines += verdict.table(nsp_accuracy, "points")
    if supervised:
        sup = exp.derived["supervised_tasks"]
        lines += ["", "## Supervised: meta_sentence_prediction with k = 1 (selected) against k = 0", "",
                  f"`meta_sentence_prediction` on {', '.join(sup)} for {s['supervised_updates']} "
                  f"updates from s{{seed}}-k0 at U, then fine-tuned (scripts/evaluate.py, measurement 1, "
                  f"{s['ft_seeds']} seed(s), {s['ft_epochs']} epochs) on the held-out "
                  f"{', '.join(exp.derived['heldout_tasks'])}; per-task scores in "
                  f"eval-supervised/results.md. Higher is better here.", ""]
        lines += verdict.table(supervised, "points")
    lines += ["", "![headline against tokens](verdict_headline_vs_tokens.png)",
              "![adaptation gain per logged update](sweep_adaptation_gain.png)", ""]
    (out / "results.md").write_text("\n".join(lines))
