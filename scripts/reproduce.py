#!/usr/bin/env python3
"""Paper-style reproduction: does meta-pretraining (k > 0) give a better
initialisation for GLUE than ordinary multi-task pre-training (k = 0)?

Pipeline (every stage is a subprocess running our own scripts / fairseq's CLIs):

1. corpus     scripts/prepare_corpus.py: WikiText-2 and Gutenberg books as two
              corpora, one sentencepiece model + dictionary           -> OUT/data
2. glue       scripts/prepare_glue.py: RTE, MRPC, CoLA, STS-B, SST-2    -> OUT/glue
3. pretrain   fairseq-train --task meta_masked_lm, objectives MLM and MLM+NSP,
              k = 0, 1, 2 (first order). k > 0 runs N updates; the k = 0 run runs
              (K+1)·N and keeps its checkpoints at N, 2N, ..., so k = 0 is compared
              at equal updates (N) and at equal tokens processed ((k+1)·N).  The
              learning rate is constant after warm-up (``--lr-scheduler fixed``) so
              that an intermediate k = 0 checkpoint is what a shorter run would give.
4. supervised fairseq-train --task meta_sentence_prediction on SST-2, MRPC, CoLA with
              k = 0 and k = 1, both from the MLM k = 0 checkpoint at N updates
5. finetune   scripts/finetune_glue.py (fairseq-hydra-train, configs/finetune) on
              every checkpoint x task x seed                           -> OUT/finetune
6. report     OUT/results.md, OUT/results.json, OUT/pretrain_loss.png,
              OUT/downstream.png: pre-training curves, mean ± std per task, the
              average, and paired (same fine-tuning seed) differences to k = 0.

Every finished step leaves a marker (``.done``) and is skipped when the script is
run again with the same OUT and settings; an interrupted fairseq-train resumes from
its checkpoint_last.pt. Changing settings for an existing OUT is an error.

    python scripts/reproduce.py --quick --out-dir runs/reproduce-quick   # ~10 min, 2 cores
    python scripts/reproduce.py --out-dir runs/reproduce                  # full (hours)
"""
import argparse
import concurrent.futures
import glob
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_meta"
PROG = "reproduce.py"
GLUE_TASKS = ["RTE", "MRPC", "CoLA", "STS-B", "SST-2"]
SUPERVISED_TASKS = ["SST-2", "MRPC", "CoLA"]
OBJECTIVES = {"mlm": "none", "mlm+nsp": "nsp"}
# One score per task: the GLUE convention (the mean of the task's metrics).
TASK_SCORE = {"RTE": ["accuracy"], "MRPC": ["f1", "accuracy"], "CoLA": ["mcc"],
              "STS-B": ["pearson", "spearman"], "SST-2": ["accuracy"]}

# Settings of the two modes; every one can be overridden on the command line.
MODES = {
    "full": dict(
        layers=2, embed_dim=128, ffn_dim=512, heads=2, tokens_per_sample=128, batch_size=16,
        updates=500, max_k=2, lr=5e-4, warmup=50, inner_lr=1e-2, log_interval=10,
        valid_points=8, vocab_size=8000, spm_input_lines=300000,
        corpora="wiki=wikitext-2,books=gutenberg", glue_max_rows=0,
        supervised_updates=200, supervised_lr=1e-4,
        finetune_updates=60, finetune_lr=3e-4, finetune_batch_size=16, seeds="1,2,3"),
    "quick": dict(
        layers=2, embed_dim=64, ffn_dim=256, heads=2, tokens_per_sample=64, batch_size=8,
        updates=12, max_k=2, lr=5e-4, warmup=4, inner_lr=1e-2, log_interval=2,
        valid_points=2, vocab_size=1000, spm_input_lines=20000,
        corpora="wiki=wikitext-2/test.txt,books=gutenberg/nltk-selections", glue_max_rows=400,
        supervised_updates=6, supervised_lr=1e-4,
        finetune_updates=6, finetune_lr=3e-4, finetune_batch_size=8, seeds="1"),
}


class ReproError(Exception):
    """Bad input or a failed step, reported as one line."""


def log(message):
    print(f"[{PROG}] {time.strftime('%H:%M:%S')} {message}", flush=True)


# --------------------------------------------------------------------------- #
# Arguments and the plan
# --------------------------------------------------------------------------- #
def build_argparser():
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True, metavar="DIR")
    p.add_argument("--quick", action="store_true",
                   help="smaller model, fewer steps, one seed, GLUE cut to 400 rows: the "
                   "whole pipeline in minutes (what the test runs)")
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"), metavar="DIR",
                   help="holds wikitext-2/, gutenberg/ and glue/ (default: ../shared/data)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="runs at once, one thread each (default: number of CPUs)")
    for key, value in MODES["full"].items():
        flag = "--" + key.replace("_", "-")
        p.add_argument(flag, type=type(value), default=None, metavar=type(value).__name__.upper(),
                       help=f"(full: {value}; quick: {MODES['quick'][key]})")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild the report from finished runs in --out-dir")
    return p


def parse_args(argv=None):
    args = build_argparser().parse_args(argv)
    settings = dict(MODES["quick" if args.quick else "full"])
    for key in settings:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    for key in ["layers", "embed_dim", "ffn_dim", "heads", "tokens_per_sample", "batch_size",
                "updates", "log_interval", "valid_points", "vocab_size", "spm_input_lines",
                "supervised_updates", "finetune_updates", "finetune_batch_size"]:
        if settings[key] < 1:
            raise ReproError(f"--{key.replace('_', '-')} must be a positive integer "
                             f"(got {settings[key]})")
    if settings["updates"] % settings["log_interval"]:
        raise ReproError(f"--updates {settings['updates']} is not a multiple of --log-interval "
                         f"{settings['log_interval']} (tokens are counted per log row)")
    if settings["max_k"] < 1:
        raise ReproError(f"--max-k must be at least 1 (got {settings['max_k']})")
    if settings["embed_dim"] % settings["heads"]:
        raise ReproError(f"--embed-dim {settings['embed_dim']} is not divisible by "
                         f"--heads {settings['heads']}")
    for key in ["lr", "inner_lr", "supervised_lr", "finetune_lr"]:
        if not settings[key] > 0:
            raise ReproError(f"--{key.replace('_', '-')} must be positive (got {settings[key]})")
    try:
        settings["seed_list"] = [int(s) for s in settings["seeds"].split(",")]
    except ValueError:
        raise ReproError(f"--seeds must be comma-separated integers (got '{settings['seeds']}')")
    if len(set(settings["seed_list"])) != len(settings["seed_list"]):
        raise ReproError(f"--seeds has repeats: {settings['seeds']}")
    if args.jobs < 1:
        raise ReproError(f"--jobs must be at least 1 (got {args.jobs})")
    data_root = Path(args.data_root)
    corpora = []
    for item in settings["corpora"].split(","):
        name, sep, rel = item.partition("=")
        if not sep or not name or not rel:
            raise ReproError(f"--corpora wants NAME=PATH,... relative to --data-root (got '{item}')")
        path = data_root / rel
        if not path.exists():
            raise ReproError(f"corpus {name}: {path} not found (--data-root {data_root})")
        corpora.append((name, path))
    settings["corpus_list"] = corpora
    for task in GLUE_TASKS:
        if not (data_root / "glue" / task).is_dir():
            raise ReproError(f"GLUE task {task}: {data_root / 'glue' / task} not found")
    args.settings = settings
    args.out = Path(args.out_dir).resolve()
    return args


def pretrain_runs(s):
    """[(name, objective, k, max_update)]: k = 0 runs long enough for equal tokens."""
    runs = []
    for objective in OBJECTIVES:
        for k in range(s["max_k"] + 1):
            updates = s["updates"] * (s["max_k"] + 1) if k == 0 else s["updates"]
            runs.append((f"{objective}-k{k}", objective, k, updates))
    return runs


def checkpoints_to_finetune(out, s):
    """[(label, checkpoint path, description)] in table order."""
    n = s["updates"]
    rows = []
    for objective in OBJECTIVES:
        for k in range(s["max_k"] + 1):
            rows.append((f"{objective}-k{k}", out / "pretrain" / f"{objective}-k{k}" / "checkpoints",
                         n, f"{objective}, k={k}, {n} updates"))
        for k in range(1, s["max_k"] + 1):
            rows.append((f"{objective}-k0@{(k + 1) * n}",
                         out / "pretrain" / f"{objective}-k0" / "checkpoints", (k + 1) * n,
                         f"{objective}, k=0, {(k + 1) * n} updates (tokens of k={k})"))
    for k in (0, 1):
        rows.append((f"supervised-k{k}", out / "supervised" / f"k{k}" / "checkpoints", None,
                     f"mlm k=0 + supervised {'+'.join(SUPERVISED_TASKS)}, k={k}"))
    return rows


def checkpoint_file(ckpt_dir, updates):
    """The checkpoint saved at `updates` (checkpoint_<epoch>_<updates>.pt), or _last."""
    if updates is None:
        return ckpt_dir / "checkpoint_last.pt"
    found = sorted(glob.glob(str(ckpt_dir / f"checkpoint_*_{updates}.pt")))
    if not found:
        raise ReproError(f"no checkpoint at update {updates} in {ckpt_dir}")
    return Path(found[-1])


# --------------------------------------------------------------------------- #
# Running steps
# --------------------------------------------------------------------------- #
def env_one_thread():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_step(name, cmd, log_path, done_path):
    """Run cmd (output to log_path) unless done_path exists; raise on failure."""
    if done_path.exists():
        log(f"{name}: done before, skipped ({done_path})")
        return 0.0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (log_path.parent / "command.sh").write_text(shlex.join(map(str, cmd)) + "\n")
    log(f"{name}: running (log: {log_path})")
    start = time.time()
    with open(log_path, "a") as out:
        code = subprocess.call([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                               env=env_one_thread(), cwd=str(REPO))
    seconds = time.time() - start
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ReproError(f"{name} failed (exit {code}) after {seconds:.0f}s; see {log_path}: "
                         f"{tail[0][:300]}")
    done_path.write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
    log(f"{name}: finished in {seconds:.0f}s")
    return seconds


def run_parallel(steps, jobs):
    """steps: [(name, cmd, log, done)]; all run, the first failure is raised at the end."""
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_step, *step) for step in steps]
        for future in futures:
            try:
                future.result()
            except ReproError as e:
                errors.append(str(e))
    if errors:
        raise ReproError(errors[0] + (f" (and {len(errors) - 1} more failures)" if len(errors) > 1 else ""))


def model_flags(s):
    return ["--arch", "roberta_base", "--encoder-layers", s["layers"],
            "--encoder-embed-dim", s["embed_dim"], "--encoder-ffn-embed-dim", s["ffn_dim"],
            "--encoder-attention-heads", s["heads"]]


def stage_data(args):
    s, out = args.settings, args.out
    corpus_args = []
    for name, path in s["corpus_list"]:
        corpus_args += ["--corpus", f"{name}={path}"]
    run_step("corpus", [sys.executable, REPO / "scripts" / "prepare_corpus.py", "--destdir",
                        out / "data", "--force", "--vocab-size", s["vocab_size"],
                        "--spm-input-lines", s["spm_input_lines"], "--workers", args.jobs,
                        *corpus_args],
             out / "logs" / "corpus.log", out / "logs" / "corpus.done")
    glue = [sys.executable, REPO / "scripts" / "prepare_glue.py",
            "--glue-dir", Path(args.data_root) / "glue", "--spm-model", out / "data" / "spm.model",
            "--dict", out / "data" / "dict.txt", "--destdir", out / "glue", "--force",
            "--tasks", ",".join(GLUE_TASKS), "--workers", args.jobs]
    if s["glue_max_rows"]:
        glue += ["--max-rows", s["glue_max_rows"]]
    run_step("glue", glue, out / "logs" / "glue.log", out / "logs" / "glue.done")


def validate_interval(s):
    """Updates between validations: a multiple of the log interval, so that the
    token count at every validation point is exact (see pretrain_curves)."""
    every = s["updates"] // s["valid_points"] // s["log_interval"] * s["log_interval"]
    return max(s["log_interval"], every)


def stage_pretrain(args):
    s, out = args.settings, args.out
    steps = []
    for name, objective, k, updates in pretrain_runs(s):
        run_dir = out / "pretrain" / name
        valid_every = validate_interval(s)
        cmd = [sys.executable, "-m", "fairseq_cli.train", out / "data", "--user-dir", USER_DIR,
               "--task", "meta_masked_lm", "--criterion", "meta_masked_lm",
               "--optimizer", "meta_adam", "--meta-train-steps", k, "--inner-lr", s["inner_lr"],
               "--meta-order", "first", "--sentence-objective", OBJECTIVES[objective],
               "--corpora", ",".join(name for name, _ in s["corpus_list"]),
               "--corpus-sampling-alpha", "0.5", *model_flags(s),
               "--tokens-per-sample", s["tokens_per_sample"], "--batch-size", s["batch_size"],
               "--lr", s["lr"], "--lr-scheduler", "fixed", "--warmup-updates", s["warmup"],
               "--max-update", updates, "--cpu", "--num-workers", "0",
               "--save-dir", run_dir / "checkpoints", "--save-interval-updates", s["updates"],
               "--keep-interval-updates", "-1", "--no-epoch-checkpoints",
               "--validate-interval-updates", valid_every, "--log-format", "json",
               "--log-interval", s["log_interval"], "--seed", "1"]
        steps.append((f"pretrain {name}", cmd, run_dir / "train.log", run_dir / ".done"))
    run_parallel(steps, args.jobs)


def stage_supervised(args):
    s, out = args.settings, args.out
    start = checkpoint_file(out / "pretrain" / "mlm-k0" / "checkpoints", s["updates"])
    steps = []
    for k in (0, 1):
        run_dir = out / "supervised" / f"k{k}"
        cmd = [sys.executable, "-m", "fairseq_cli.train", out / "glue", "--user-dir", USER_DIR,
               "--task", "meta_sentence_prediction", "--criterion", "meta_sentence_prediction",
               "--optimizer", "meta_adam", "--tasks", ",".join(SUPERVISED_TASKS),
               "--meta-train-steps", k, "--inner-lr", s["inner_lr"], "--meta-order", "first",
               "--task-sampling-alpha", "0.5", *model_flags(s),
               "--max-positions", s["tokens_per_sample"], "--shorten-method", "truncate",
               "--batch-size", s["batch_size"], "--lr", s["supervised_lr"],
               "--lr-scheduler", "fixed", "--warmup-updates", max(1, s["supervised_updates"] // 10),
               "--max-update", s["supervised_updates"], "--cpu", "--num-workers", "0",
               "--restore-file", start, "--reset-optimizer", "--reset-dataloader",
               "--reset-meters", "--reset-lr-scheduler", "--save-dir", run_dir / "checkpoints",
               "--no-epoch-checkpoints", "--log-format", "json",
               "--log-interval", s["log_interval"], "--seed", "1"]
        steps.append((f"supervised k={k}", cmd, run_dir / "train.log", run_dir / ".done"))
    run_parallel(steps, args.jobs)


def stage_finetune(args):
    s, out = args.settings, args.out
    steps = []
    for label, ckpt_dir, updates, _ in checkpoints_to_finetune(out, s):
        run_dir = out / "finetune" / label
        cmd = [sys.executable, REPO / "scripts" / "finetune_glue.py",
               "--checkpoint", checkpoint_file(ckpt_dir, updates), "--glue-data", out / "glue",
               "--tasks", ",".join(GLUE_TASKS), "--seeds", s["seeds"],
               "--max-update", s["finetune_updates"], "--out-dir", run_dir, "--cpu", "--",
               f"optimization.lr=[{s['finetune_lr']}]",
               f"dataset.batch_size={s['finetune_batch_size']}", "common.log_interval=50"]
        steps.append((f"finetune {label}", cmd, out / "logs" / f"finetune-{label}.log",
                      run_dir / ".done"))
    run_parallel(steps, args.jobs)


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def read_fairseq_log(path):
    """{'train': [json rows of train_inner], 'valid': [json rows of valid]}."""
    rows = {"train": [], "valid": []}
    for line in Path(path).read_text(errors="replace").splitlines():
        for kind, tag in (("train", "| train_inner | "), ("valid", "| valid | ")):
            if tag in line:
                try:
                    rows[kind].append(json.loads(line.split(tag, 1)[1]))
                except ValueError:
                    pass
    return rows


def pretrain_curves(out, s):
    """Per run: tokens processed and losses (bits) along training.

    Every ``train_inner`` row carries ``episode_tokens``, the exact number of tokens
    (support and query mini-batches) that the updates since the previous row
    processed, summed by fairseq's metrics. Tokens processed at a logged update is
    the sum of the rows up to it. Validation and checkpoints fall on logged updates
    (``--validate-interval-updates`` and ``--updates`` are multiples of
    ``--log-interval``), so every point is an exact count.
    """
    curves = {}
    for name, objective, k, _ in pretrain_runs(s):
        log_path = out / "pretrain" / name / "train.log"
        rows = read_fairseq_log(log_path)
        train, tokens, last_update, tokens_at = [], 0, 0, {0: 0}
        for r in rows["train"]:
            update = int(r["num_updates"])
            if update <= last_update:  # a resumed run repeats updates: keep the first pass
                continue
            if "episode_tokens" not in r:
                raise ReproError(f"{log_path}: a train_inner row has no episode_tokens (a log "
                                 "from an older fairseq_meta); rerun this step")
            tokens += int(r["episode_tokens"])
            last_update = update
            tokens_at[update] = tokens
            train.append({"updates": update, "tokens": tokens, "meta_test_loss": float(r["loss"]),
                          "mlm_loss": float(r.get("mlm_loss", r["loss"]))})
        valid = {}
        for r in rows["valid"]:  # a resumed run may log an update twice: keep the last
            valid[int(r["valid_num_updates"])] = (float(r["valid_loss"]),
                                                  float(r.get("valid_mlm_loss", r["valid_loss"])))
        curves[name] = {
            "objective": objective, "k": k, "train": train,
            "valid": [{"updates": u, "tokens": tokens_at[u], "loss": l, "mlm_loss": m}
                      for u, (l, m) in sorted(valid.items()) if u in tokens_at],
        }
    return curves


def task_score(split, seed):
    return statistics.fmean(split["seeds"][seed][m] for m in TASK_SCORE[split["name"]])


def downstream_scores(out, s):
    """{label: {task: {seed: score}}} from every finished finetune_glue results.json
    (a checkpoint whose fine-tuning has not finished is left out)."""
    scores = {}
    for label, _, _, _ in checkpoints_to_finetune(out, s):
        path = out / "finetune" / label / "results.json"
        if not (out / "finetune" / label / ".done").exists():  # results.json grows per task
            continue
        result = json.loads(path.read_text())
        scores[label] = {}
        for task in GLUE_TASKS:
            split = result["tasks"][task]["splits"]["valid"]
            scores[label][task] = {int(seed): task_score(split, seed) for seed in split["seeds"]}
    return scores


def mean_std(values):
    values = list(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def average_over_tasks(per_task, tasks):
    """{seed: mean over tasks} for seeds every task has."""
    seeds = set.intersection(*(set(per_task[t]) for t in tasks))
    return {seed: statistics.fmean(per_task[t][seed] for t in tasks) for seed in sorted(seeds)}


def comparisons(s):
    """[(title, label, baseline label, tasks)]: what is compared with what."""
    n, rows = s["updates"], []
    for objective in OBJECTIVES:
        for k in range(1, s["max_k"] + 1):
            rows.append((f"{objective}: k={k} vs k=0, equal updates ({n})",
                         f"{objective}-k{k}", f"{objective}-k0", GLUE_TASKS))
            rows.append((f"{objective}: k={k} vs k=0, equal tokens ({(k + 1) * n} k=0 updates)",
                         f"{objective}-k{k}", f"{objective}-k0@{(k + 1) * n}", GLUE_TASKS))
    held_out = [t for t in GLUE_TASKS if t not in SUPERVISED_TASKS]
    rows.append(("supervised: k=1 vs k=0, held-out tasks (" + ", ".join(held_out) + ")",
                 "supervised-k1", "supervised-k0", held_out))
    rows.append(("supervised: k=1 vs k=0, all tasks", "supervised-k1", "supervised-k0", GLUE_TASKS))
    return rows


def paired_differences(scores, s):
    """Per comparison and task: mean ± std over seeds of (score - baseline score), same seed."""
    result = []
    for title, label, base, tasks in comparisons(s):
        if label not in scores or base not in scores:
            continue
        per_task = {}
        for task in tasks:
            seeds = sorted(set(scores[label][task]) & set(scores[base][task]))
            diffs = [scores[label][task][sd] - scores[base][task][sd] for sd in seeds]
            mean, std = mean_std(diffs)
            per_task[task] = {"mean": mean, "std": std, "n": len(diffs),
                              "wins": sum(d > 0 for d in diffs)}
        avg_label = average_over_tasks(scores[label], tasks)
        avg_base = average_over_tasks(scores[base], tasks)
        diffs = [avg_label[sd] - avg_base[sd] for sd in sorted(set(avg_label) & set(avg_base))]
        mean, std = mean_std(diffs)
        result.append({"title": title, "label": label, "baseline": base, "tasks": tasks,
                       "per_task": per_task, "average": {"mean": mean, "std": std,
                                                         "n": len(diffs),
                                                         "wins": sum(d > 0 for d in diffs)}})
    return result


def plot(curves, scores, out, s):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {0: "tab:blue", 1: "tab:orange", 2: "tab:green", 3: "tab:red"}
    fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(6 * len(OBJECTIVES), 4.2), squeeze=False)
    for ax, objective in zip(axes[0], OBJECTIVES):
        for name, c in curves.items():
            if c["objective"] != objective:
                continue
            color = colors.get(c["k"], None)
            if c["train"]:
                ax.plot([p["tokens"] / 1e6 for p in c["train"]],
                        [p["meta_test_loss"] for p in c["train"]], color=color, alpha=0.35,
                        linewidth=0.8)
            if c["valid"]:
                ax.plot([p["tokens"] / 1e6 for p in c["valid"]], [p["loss"] for p in c["valid"]],
                        color=color, marker="o", markersize=3, label=f"k={c['k']} valid")
        ax.set_title(f"pre-training, {objective}: faint = meta-test (query) loss, "
                     "dots = valid loss", fontsize=9)
        ax.set_xlabel("tokens processed, all mini-batches (millions)")
        ax.set_ylabel("loss (bits)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pretrain_loss.png", dpi=110)
    plt.close(fig)

    labels = list(scores)
    panels = GLUE_TASKS + ["average"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, task in zip(axes.flat, panels):
        means, stds = [], []
        for label in labels:
            per_seed = (average_over_tasks(scores[label], GLUE_TASKS) if task == "average"
                        else scores[label][task])
            m, sd = mean_std(per_seed.values())
            means.append(m)
            stds.append(sd)
        for i, (label, m, sd) in enumerate(zip(labels, means, stds)):
            # points, not bars: the differences are small next to the scores
            ax.errorbar([i], [m], yerr=[sd], fmt="o", capsize=3,
                        color=colors.get(int(label.split("-k")[1][0]), "gray"))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        metric = "GLUE score" if task == "average" else "/".join(TASK_SCORE[task])
        ax.set_title(f"{task} ({metric}, dev)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("GLUE dev after fine-tuning, mean ± std over seeds; blue k=0, orange k=1, "
                 "green k=2", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "downstream.png", dpi=110)
    plt.close(fig)


def fmt(mean, std):
    return f"{mean:.2f} ± {std:.2f}"


def write_report(args):
    s, out = args.settings, args.out
    curves = pretrain_curves(out, s)
    scores = downstream_scores(out, s)
    if not scores:
        raise ReproError(f"no fine-tuning has finished in {out / 'finetune'} yet")
    missing = [label for label, _, _, _ in checkpoints_to_finetune(out, s) if label not in scores]
    diffs = paired_differences(scores, s)
    plot(curves, scores, out, s)

    lines = ["# Meta-pretraining reproduction", "",
             f"Mode: {'quick' if args.quick else 'full'}; settings: `{json.dumps(public_settings(s))}`",
             "", "## Pre-training", "",
             "| run | objective | k | updates | tokens processed | final valid loss (bits) "
             "| final valid MLM loss | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for name, c in curves.items():
        last = c["valid"][-1] if c["valid"] else None
        done = out / "pretrain" / name / ".done"
        wall = json.loads(done.read_text())["seconds"] if done.exists() else float("nan")
        updates = last["updates"] if last else 0
        lines.append(f"| {name} | {c['objective']} | {c['k']} | {updates} | "
                     f"{last['tokens'] if last else 0:,.0f} | "
                     f"{last['loss'] if last else float('nan'):.3f} | "
                     f"{last['mlm_loss'] if last else float('nan'):.3f} | {wall:.0f} |")
    lines += ["", "Valid loss of the k = 0 runs at the updates where k > 0 runs stop "
              "(equal-token points):", ""]
    for name, c in curves.items():
        if c["k"] == 0:
            points = ", ".join(f"{p['updates']}: {p['loss']:.3f}" for p in c["valid"]
                               if p["updates"] % s["updates"] == 0)
            lines.append(f"- {name}: {points}")

    lines += ["", "## Fine-tuning (GLUE dev, metric x 100, mean ± std over seeds "
              f"{s['seeds']})", "",
              "| checkpoint | " + " | ".join(f"{t} ({'/'.join(TASK_SCORE[t])})" for t in GLUE_TASKS)
              + " | average |", "|---" * (len(GLUE_TASKS) + 2) + "|"]
    described = {label: desc for label, _, _, desc in checkpoints_to_finetune(out, s)}
    for label, per_task in scores.items():
        cells = [fmt(*mean_std(per_task[t].values())) for t in GLUE_TASKS]
        cells.append(fmt(*mean_std(average_over_tasks(per_task, GLUE_TASKS).values())))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if missing:
        lines += ["", f"**Not fine-tuned yet (left out of this report):** {', '.join(missing)}."]
    lines += ["", "Checkpoints: " + "; ".join(f"`{k}` = {v}" for k, v in described.items()), "",
              "## Paired differences to k = 0 (same fine-tuning seed)", "",
              "mean ± std over seeds of (score - baseline score); wins = seeds where k > 0 is "
              "higher.", "",
              "| comparison | " + " | ".join(GLUE_TASKS) + " | average |",
              "|---" * (len(GLUE_TASKS) + 2) + "|"]
    for d in diffs:
        cells = []
        for task in GLUE_TASKS:
            t = d["per_task"].get(task)
            cells.append(f"{t['mean']:+.2f} ± {t['std']:.2f} ({t['wins']}/{t['n']})" if t else "—")
        a = d["average"]
        cells.append(f"**{a['mean']:+.2f} ± {a['std']:.2f}** ({a['wins']}/{a['n']})")
        lines.append(f"| {d['title']} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: `pretrain_loss.png`, `downstream.png`.", ""]
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(
        {"mode": "quick" if args.quick else "full", "settings": public_settings(s),
         "not_fine_tuned": missing,
         "pretrain": curves, "scores": {l: {t: {str(sd): v for sd, v in per.items()}
                                              for t, per in ts.items()}
                                         for l, ts in scores.items()},
         "paired_differences": diffs}, indent=1) + "\n")
    log(f"report: {out / 'results.md'}, {out / 'pretrain_loss.png'}, {out / 'downstream.png'}")


def public_settings(s):
    return {k: v for k, v in s.items() if k not in ("corpus_list", "seed_list")}


# --------------------------------------------------------------------------- #
def check_settings_file(args):
    """OUT remembers its settings; other settings for the same OUT are an error."""
    path = args.out / "settings.json"
    wanted = {"quick": args.quick, **public_settings(args.settings)}
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
        if changed:
            raise ReproError(f"{args.out} was made with other settings ({', '.join(changed)}); "
                             "use a new --out-dir or delete it")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=1) + "\n")


def main(argv=None):
    try:
        args = parse_args(argv)
        if args.report_only:
            if not (args.out / "settings.json").exists():
                raise ReproError(f"{args.out} holds no reproduction run (no settings.json)")
        try:
            import matplotlib  # noqa: F401 - checked now, not after hours of training
        except ImportError:
            raise ReproError("the plots need matplotlib: pip install -e '.[repro]'")
        check_settings_file(args)
        start = time.time()
        if not args.report_only:
            log(f"output: {args.out} ({'quick' if args.quick else 'full'} mode, "
                f"{args.jobs} jobs)")
            stage_data(args)
            stage_pretrain(args)
            stage_supervised(args)
            stage_finetune(args)
        write_report(args)
        log(f"done in {time.time() - start:.0f}s")
    except ReproError as e:
        sys.exit(f"{PROG}: error: {e}")


if __name__ == "__main__":
    main()
