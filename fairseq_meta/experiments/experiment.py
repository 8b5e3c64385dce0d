"""The machinery of ``scripts/reproduce_verdict.py`` (its stages are
:mod:`fairseq_meta.experiments.reproduce_verdict`): an experiment directory and its settings,
the mode settings and their command-line flags, and steps run as subprocesses.

Every finished step leaves a marker (``.done``) and is skipped when run again with
the same OUT and settings; an interrupted fairseq-train resumes from its
checkpoint_last.pt. Other settings for an existing OUT are an error. Steps run
``jobs`` at a time with the thread policy of :mod:`fairseq_meta.run.threads`.

(The first, paper-style reproduction, ``scripts/reproduce.py`` with its 60-update
GLUE fine-tuning, lived here until commit 0db0149; docs/results.md keeps its results.)
"""
import concurrent.futures
import glob
import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..run.cli import Cli
from ..errors import MetaConfigError

from ..run.paths import REPO, SHARED_DATA, USER_DIR  # noqa: F401 (USER_DIR: for the stages)

cli = Cli("reproduce_verdict.py")


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
    experiment of scripts/reproduce_verdict.py."""
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
    """The command-line arguments of a reproduction script: --out-dir,
    --quick, --data-root, --jobs, one flag per setting of ``modes`` (default None:
    the mode's value) and --report-only."""
    from ..run.threads import cpu_count

    parser.add_argument("--out-dir", required=True, metavar="DIR")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--data-root", default=str(SHARED_DATA), metavar="DIR",
                        help=data_root_help)
    parser.add_argument("--jobs", type=int, default=cpu_count(), metavar="N", help=jobs_help)
    for key, value in modes["full"].items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                            metavar=type(value).__name__.upper(),
                            help=f"(full: {value}; quick: {modes['quick'][key]})")
    parser.add_argument("--report-only", action="store_true", help=report_only_help)
    return parser


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
    """steps: [(name, cmd, log, done)], or lists of them that run one after another in one
    job (a step that starts from the one before it; a chain stops at its first failure);
    all run, the first failure is raised at the end."""
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_in_order, step if isinstance(step, list) else [step], env)
                   for step in steps]
        for future in futures:
            try:
                future.result()
            except MetaConfigError as e:
                errors.append(str(e))
    if errors:
        raise MetaConfigError(errors[0] + (f" (and {len(errors) - 1} more failures)" if len(errors) > 1 else ""))


def _run_in_order(steps, env):
    for step in steps:
        run_step(*step, env)


def model_flags(s):
    return ["--arch", "roberta_base", "--encoder-layers", s["layers"],
            "--encoder-embed-dim", s["embed_dim"], "--encoder-ffn-embed-dim", s["ffn_dim"],
            "--encoder-attention-heads", s["heads"]]


def check_settings_file(exp, added=None):
    """OUT remembers its settings; other settings for the same OUT are an error.
    ``added``: {setting: value} of settings introduced after OUT directories were
    made; a settings.json without one was made with that value."""
    path = exp.out / "settings.json"
    wanted = {"quick": exp.quick, **exp.settings}
    if path.exists():
        before = {**(added or {}), **json.loads(path.read_text())}
        changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
        if changed:
            raise MetaConfigError(f"{exp.out} was made with other settings ({', '.join(changed)}); "
                             "use a new --out-dir or delete it")
    else:
        exp.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=1) + "\n")
