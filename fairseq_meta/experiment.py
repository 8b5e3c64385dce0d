"""The paper-style experiment behind ``scripts/reproduce.py``: what runs (the plan),
and running it. Does meta-pretraining (k > 0) give a better initialisation for GLUE
than ordinary multi-task pre-training (k = 0)?

Stages (each a subprocess: our scripts or fairseq's CLIs):

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

The report (stage 6) is :mod:`fairseq_meta.report`.

Every finished step leaves a marker (``.done``) and is skipped when run again with
the same OUT and settings; an interrupted fairseq-train resumes from its
checkpoint_last.pt. Other settings for an existing OUT are an error. Steps run
``jobs`` at a time with the thread policy of :mod:`fairseq_meta.threads`.
"""
import concurrent.futures
import glob
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import Cli
from .errors import MetaConfigError
from .threads import intra_op_threads, thread_env

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_meta"
GLUE_TASKS = ["RTE", "MRPC", "CoLA", "STS-B", "SST-2"]
SUPERVISED_TASKS = ["SST-2", "MRPC", "CoLA"]
OBJECTIVES = {"mlm": "none", "mlm+nsp": "nsp"}

cli = Cli("reproduce.py")

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


@dataclass
class Experiment:
    """One experiment directory and what it is run with."""
    out: Path
    settings: dict
    quick: bool
    jobs: int
    data_root: Path


def mode_settings(modes, quick, overrides, positive):
    """``modes["quick" or "full"]`` with ``overrides`` (None = the mode's value)
    applied; every key in ``positive`` must be at least 1. Shared by the
    experiments of scripts/reproduce.py and scripts/reproduce_verdict.py."""
    settings = dict(modes["quick" if quick else "full"])
    for key, value in overrides.items():
        if key not in settings:
            raise MetaConfigError(f"unknown setting {key}")
        if value is not None:
            settings[key] = value
    for key in positive:
        if settings[key] < 1:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be a positive integer "
                                  f"(got {settings[key]})")
    return settings


def add_mode_arguments(parser, modes, quick_help, data_root_help, jobs_help, report_only_help):
    """The command-line arguments both reproduction scripts share: --out-dir,
    --quick, --data-root, --jobs, one flag per setting of ``modes`` (default None:
    the mode's value) and --report-only."""
    from .threads import cpu_count

    parser.add_argument("--out-dir", required=True, metavar="DIR")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"), metavar="DIR",
                        help=data_root_help)
    parser.add_argument("--jobs", type=int, default=cpu_count(), metavar="N", help=jobs_help)
    for key, value in modes["full"].items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                            metavar=type(value).__name__.upper(),
                            help=f"(full: {value}; quick: {modes['quick'][key]})")
    parser.add_argument("--report-only", action="store_true", help=report_only_help)
    return parser


def settings_for(quick, overrides, data_root):
    """The settings of a mode with ``overrides`` (None = the mode's value) applied,
    checked; adds ``seed_list`` and ``corpus_list`` (name, path)."""
    settings = mode_settings(MODES, quick, overrides, [
        "layers", "embed_dim", "ffn_dim", "heads", "tokens_per_sample", "batch_size", "updates",
        "log_interval", "valid_points", "vocab_size", "spm_input_lines", "supervised_updates",
        "finetune_updates", "finetune_batch_size"])
    if settings["updates"] % settings["log_interval"]:
        raise MetaConfigError(f"--updates {settings['updates']} is not a multiple of --log-interval "
                              f"{settings['log_interval']} (tokens are counted per log row)")
    if settings["max_k"] < 1:
        raise MetaConfigError(f"--max-k must be at least 1 (got {settings['max_k']})")
    if settings["embed_dim"] % settings["heads"]:
        raise MetaConfigError(f"--embed-dim {settings['embed_dim']} is not divisible by "
                              f"--heads {settings['heads']}")
    for key in ["lr", "inner_lr", "supervised_lr", "finetune_lr"]:
        if not settings[key] > 0:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be positive (got {settings[key]})")
    try:
        settings["seed_list"] = [int(s) for s in settings["seeds"].split(",")]
    except ValueError:
        raise MetaConfigError(f"--seeds must be comma-separated integers (got '{settings['seeds']}')")
    if len(set(settings["seed_list"])) != len(settings["seed_list"]):
        raise MetaConfigError(f"--seeds has repeats: {settings['seeds']}")
    data_root = Path(data_root)
    corpora = []
    for item in settings["corpora"].split(","):
        name, sep, rel = item.partition("=")
        if not sep or not name or not rel:
            raise MetaConfigError(f"--corpora wants NAME=PATH,... relative to --data-root (got '{item}')")
        path = data_root / rel
        if not path.exists():
            raise MetaConfigError(f"corpus {name}: {path} not found (--data-root {data_root})")
        corpora.append((name, path))
    settings["corpus_list"] = corpora
    for task in GLUE_TASKS:
        if not (data_root / "glue" / task).is_dir():
            raise MetaConfigError(f"GLUE task {task}: {data_root / 'glue' / task} not found")
    return settings


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
        raise MetaConfigError(f"no checkpoint at update {updates} in {ckpt_dir}")
    return Path(found[-1])



def run_step(name, cmd, log_path, done_path, env=None):
    """Run cmd (output to log_path) unless done_path exists; raise on failure."""
    if done_path.exists():
        cli.log(f"{name}: done before, skipped ({done_path})")
        return 0.0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (log_path.parent / "command.sh").write_text(shlex.join(map(str, cmd)) + "\n")
    cli.log(f"{name}: running (log: {log_path})")
    start = time.time()
    with open(log_path, "a") as out:
        code = subprocess.call([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                               env=env, cwd=str(REPO))
    seconds = time.time() - start
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise MetaConfigError(f"{name} failed (exit {code}) after {seconds:.0f}s; see {log_path}: "
                              f"{tail[0][:300]}")
    done_path.write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
    cli.log(f"{name}: finished in {seconds:.0f}s")
    return seconds


def run_parallel(steps, jobs, env=None):
    """steps: [(name, cmd, log, done)]; all run, the first failure is raised at the end."""
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_step, *step, env) for step in steps]
        for future in futures:
            try:
                future.result()
            except MetaConfigError as e:
                errors.append(str(e))
    if errors:
        raise MetaConfigError(errors[0] + (f" (and {len(errors) - 1} more failures)" if len(errors) > 1 else ""))


def model_flags(s):
    return ["--arch", "roberta_base", "--encoder-layers", s["layers"],
            "--encoder-embed-dim", s["embed_dim"], "--encoder-ffn-embed-dim", s["ffn_dim"],
            "--encoder-attention-heads", s["heads"]]


def stage_data(exp, env):
    s, out = exp.settings, exp.out
    corpus_args = []
    for name, path in s["corpus_list"]:
        corpus_args += ["--corpus", f"{name}={path}"]
    run_step("corpus", [sys.executable, REPO / "scripts" / "prepare_corpus.py", "--destdir",
                        out / "data", "--force", "--vocab-size", s["vocab_size"],
                        "--spm-input-lines", s["spm_input_lines"], "--workers", exp.jobs,
                        *corpus_args],
             out / "logs" / "corpus.log", out / "logs" / "corpus.done", env)
    glue = [sys.executable, REPO / "scripts" / "prepare_glue.py",
            "--glue-dir", Path(exp.data_root) / "glue", "--spm-model", out / "data" / "spm.model",
            "--dict", out / "data" / "dict.txt", "--destdir", out / "glue", "--force",
            "--tasks", ",".join(GLUE_TASKS), "--workers", exp.jobs]
    if s["glue_max_rows"]:
        glue += ["--max-rows", s["glue_max_rows"]]
    run_step("glue", glue, out / "logs" / "glue.log", out / "logs" / "glue.done", env)


def validate_interval(s):
    """Updates between validations: a multiple of the log interval, so that the
    token count at every validation point is exact (see pretrain_curves)."""
    every = s["updates"] // s["valid_points"] // s["log_interval"] * s["log_interval"]
    return max(s["log_interval"], every)


def stage_pretrain(exp, env):
    s, out = exp.settings, exp.out
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
    run_parallel(steps, exp.jobs, env)


def stage_supervised(exp, env):
    s, out = exp.settings, exp.out
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
    run_parallel(steps, exp.jobs, env)


def stage_finetune(exp, env):
    s, out = exp.settings, exp.out
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
    run_parallel(steps, exp.jobs, env)



def check_settings_file(exp):
    """OUT remembers its settings; other settings for the same OUT are an error."""
    path = exp.out / "settings.json"
    wanted = {"quick": exp.quick, **public_settings(exp.settings)}
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
        if changed:
            raise MetaConfigError(f"{exp.out} was made with other settings ({', '.join(changed)}); "
                             "use a new --out-dir or delete it")
    else:
        exp.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=1) + "\n")


def public_settings(s):
    """The settings as written to settings.json and the report (no derived values)."""
    return {k: v for k, v in s.items() if k not in ("corpus_list", "seed_list")}


def run(exp):
    """Every stage; finished steps are skipped."""
    threads, why = intra_op_threads(jobs=exp.jobs)
    env = thread_env(threads, {**os.environ, "PYTHONUNBUFFERED": "1"})
    cli.log(f"output: {exp.out} ({'quick' if exp.quick else 'full'} mode, {exp.jobs} jobs at a "
            f"time, {threads} thread(s) each: {why})")
    stage_data(exp, env)
    stage_pretrain(exp, env)
    stage_supervised(exp, env)
    stage_finetune(exp, env)
