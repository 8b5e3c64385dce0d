"""The main job (``scripts/pretrain.sh``): corpus -> data -> meta-pre-training on CPU,
told as it happens.

Order of work: every input and training flag is checked first (``EXTRA_ARGS`` with
fairseq's own parser, so a misspelled flag is one line before anything is built);
then the data is built, or reused when its inputs' *content* is unchanged; then
``fairseq-train`` runs with its full log in ``RUN_DIR/train.log`` while the console
shows a short header, progress with an ETA and an end-of-run summary.

    python -m fairseq_meta.run.pretrain --run-dir DIR --max-update N [--extra-args "..."] [TEXT ...]
"""
import argparse
import importlib.util
import difflib
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

from ..errors import MetaConfigError
from .cli import Cli, Terminated, run
from .paths import REPO, USER_DIR
from .threads import intra_op_threads, thread_env

PROG = "pretrain"
STDLIB_CORPUS = "default corpus: Python standard library docstrings"
# Checkpoints kept besides checkpoint_best.pt and checkpoint_last.pt.
KEEP_INTERVAL_CHECKPOINTS = 2
cli = Cli(PROG)


def warmup_updates(max_update):
    """A tenth of the run, at most 50 updates: warm-up always ends well before the end."""
    return max(1, min(50, max_update // 10))


def training_argv(data, run_dir, max_update, extra=()):
    """The fairseq-train command line after ``fairseq-train`` (EXTRA_ARGS last)."""
    run_dir = Path(run_dir)
    every = max(10, max_update // 5 // 10 * 10)  # validate and save ~5 times, on logged updates
    return [
        str(data), "--user-dir", str(USER_DIR),
        "--task", "meta_masked_lm", "--criterion", "meta_masked_lm", "--optimizer", "meta_adam",
        "--meta-train-steps", "1", "--inner-lr", "1e-3", "--meta-order", "first",
        "--arch", "roberta_base", "--encoder-layers", "2", "--encoder-embed-dim", "128",
        "--encoder-ffn-embed-dim", "512", "--encoder-attention-heads", "2",
        "--tokens-per-sample", "128", "--batch-size", "16",
        "--lr", "5e-4", "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(warmup_updates(max_update)),
        "--total-num-update", str(max_update), "--max-update", str(max_update),
        "--cpu", "--num-workers", "0",
        "--save-dir", str(run_dir / "checkpoints"),
        "--tensorboard-logdir", str(run_dir / "tensorboard"),
        "--log-format", "json", "--log-interval", "10",
        "--validate-interval-updates", str(every), "--save-interval-updates", str(every),
        "--keep-interval-updates", str(KEEP_INTERVAL_CHECKPOINTS), "--no-epoch-checkpoints",
        "--seed", "1", *extra,
    ]


# --------------------------------------------------------------------------- #
# Checks before any work
# --------------------------------------------------------------------------- #
def parse_training_flags(argv):
    """fairseq-train's own parser on ``argv``; bad flags are one MetaConfigError line."""
    from fairseq import options

    parser = options.get_training_parser()

    def one_line(message):
        if len(message) > 200 and "(choose from" in message:  # hundreds of --arch names
            message = message.split("(choose from")[0] + "(see fairseq-train --help)"
        raise MetaConfigError(f"EXTRA_ARGS: {message}")

    parser.error = one_line  # instead of the usage text and exit
    args, extra = options.parse_args_and_arch(parser, argv, parse_known=True)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown or extra:
        flag = (unknown or extra)[0]
        known = [s for s in parser._option_string_actions if s.startswith("--")]
        close = difflib.get_close_matches(flag.split("=")[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        what = "unknown flag" if unknown else "unexpected argument"
        raise MetaConfigError(f"EXTRA_ARGS: {what} {flag}{hint}")
    return args


def check_schedule(args, max_update):
    """--max-update and the learning-rate schedule must describe the same run."""
    if args.max_update != max_update:
        raise MetaConfigError(
            f"EXTRA_ARGS sets --max-update {args.max_update}, MAX_UPDATE is {max_update}: "
            f"set MAX_UPDATE={args.max_update} instead (it sets the run length and the "
            "learning-rate schedule together)")
    total = getattr(args, "total_num_update", None)
    if args.lr_scheduler == "polynomial_decay" and int(float(total)) != max_update:
        raise MetaConfigError(
            f"the learning rate decays over --total-num-update {total} updates but training "
            f"stops at {max_update}: drop --total-num-update (MAX_UPDATE sets it)")
    warmup = getattr(args, "warmup_updates", 0) or 0
    if warmup >= max_update:
        raise MetaConfigError(
            f"--warmup-updates {warmup} is not below the {max_update} updates of the run: the "
            "learning rate would never reach --lr")


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_fingerprint(inputs):
    """What the data is built from, keyed on content: per input path, the sha256 of
    the file (a directory: of every file under it, with its relative name)."""
    if not inputs:
        # The corpus is made from this Python's standard library by this code.
        h = hashlib.sha256(f"{sys.version}\n{sysconfig.get_paths()['stdlib']}\n".encode())
        for code in (USER_DIR / "commands" / "stdlib_corpus.py", USER_DIR / "prep" / "stdlib_corpus.py"):
            h.update(code.read_bytes() if code.exists() else b"")
        return {STDLIB_CORPUS: h.hexdigest()}
    prints = {}
    for p in map(Path, inputs):
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                h.update(f"{f.relative_to(p)}\0{file_digest(f)}\n".encode())
            prints[str(p)] = h.hexdigest()
        else:
            prints[str(p)] = file_digest(p)
    return prints


def data_plan(run_dir, inputs):
    """(reuse, fingerprint): reuse RUN_DIR/data only if built from the same content.
    Other data under existing checkpoints is refused."""
    data, stamp = run_dir / "data", run_dir / "data.inputs"
    want = input_fingerprint(inputs)
    try:
        before = json.loads(stamp.read_text())
    except (OSError, ValueError):
        before = None
    if (data / "dict.txt").is_file() and before == want:
        return True, want
    if (run_dir / "checkpoints" / "checkpoint_last.pt").exists():
        if isinstance(before, dict):
            changed = sorted(k for k in set(want) | set(before) if want.get(k) != before.get(k))
            why = "input content changed: " + ", ".join(changed)
        else:
            why = "no record of what its data was built from"
        raise MetaConfigError(
            f"{run_dir} holds checkpoints trained on other data ({why}); set RUN_DIR to a new "
            f"directory or delete {run_dir}")
    return False, want


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #
def duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def initial_valid_loss(args, threads=None):
    """Valid loss of the weights the run starts from (same seed, same code path as
    fairseq-train's validation): the "before" of the end-of-run summary."""
    import numpy as np
    import torch
    from fairseq import metrics, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    with warnings.catch_warnings():  # hydra's deprecation notes, also in train.log
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(args)
    if threads:
        torch.set_num_threads(threads)
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid", combine=False, epoch=1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    itr = trainer.get_valid_iterator("valid").next_epoch_itr(shuffle=False)
    with torch.no_grad(), metrics.aggregate(new_root=True) as agg, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data loader's pin_memory note on CPU
        for sample in itr:
            trainer.valid_step(sample)
        stats = agg.get_smoothed_values()
    return (float(stats["loss"]), sum(p.numel() for p in model.parameters()),
            len(task.source_dictionary))


def json_row(line, tag):
    marker = f"| {tag} | "
    if marker not in line:
        return None
    try:
        return json.loads(line.split(marker, 1)[1])
    except ValueError:
        return None


class Progress:
    """Turns fairseq's json log lines into a few console lines: progress every ~5% with
    an ETA, each validation, and what the summary needs."""

    def __init__(self, max_update, log=cli.log):
        self.max_update, self.log = max_update, log
        self.start = time.time()
        self.first = None  # (update, time) of the first logged update of this process
        self.next_mark = 0
        self.valid = []  # (update, loss, best loss)
        self.resumed_at = None

    def feed(self, line):
        if "Loaded checkpoint" in line and "@" in line:
            try:
                self.resumed_at = int(line.rsplit("@", 1)[1].split()[0])
            except (IndexError, ValueError):
                return
            self.log(f"resuming from checkpoint_last.pt at update {self.resumed_at}")
            return
        row = json_row(line, "train_inner")
        if row is not None:
            return self._train(row)
        row = json_row(line, "valid")
        if row is not None:
            u = int(row["valid_num_updates"])
            loss = float(row["valid_loss"])
            best = float(row.get("valid_best_loss", loss))  # absent on the first validation
            self.valid.append((u, loss, best))
            best_so_far = loss <= best
            self.log(f"validation at update {u}: loss {loss:.3f} bits"
                     + (" (best so far)" if best_so_far else f" (best {best:.3f})"))

    def _train(self, row):
        u, now = int(row["num_updates"]), time.time()
        if self.first is None:
            self.first = (u, now)
        if u < self.next_mark and u < self.max_update:
            return
        self.next_mark = u + max(1, self.max_update // 20)
        # The rate since the first logged update leaves out start-up; before that
        # row exists, the time since start (start-up included) is the best guess.
        done_u, since = u - self.first[0], now - self.first[1]
        if done_u <= 0:
            done_u, since = u - (self.resumed_at or 0), now - self.start
        eta = ""
        if done_u > 0 and since > 0:
            rate = done_u / since
            eta = f", {rate:.2f} updates/s, ETA {duration((self.max_update - u) / rate)}"
        self.log(f"update {u}/{self.max_update} ({100 * u // self.max_update}%): loss "
                 f"{float(row['loss']):.3f} bits, lr {float(row['lr']):.2e}, elapsed "
                 f"{duration(now - self.start)}{eta}")


def train(args, argv, run_dir, threads, log_path):
    """fairseq-train as a subprocess: everything to log_path, a digest to the console."""
    progress = Progress(args.max_update)
    env = thread_env(threads, dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore"))
    with open(log_path, "a") as full_log:
        full_log.write(f"# {shlex.join([sys.executable, '-m', 'fairseq_cli.train', *argv])}\n")
        proc = subprocess.Popen([sys.executable, "-m", "fairseq_cli.train", *argv], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=str(run_dir))
        try:
            for line in proc.stdout:
                full_log.write(line)
                progress.feed(line)
            code = proc.wait()
        except (KeyboardInterrupt, Terminated) as stop:
            proc.terminate()
            proc.wait()
            resume = "run the same command again to resume from checkpoint_last.pt"
            if isinstance(stop, Terminated):  # keeps its exit status, 143, for schedulers
                raise Terminated(stop.code, f"terminated; {resume}") from None
            raise MetaConfigError(f"interrupted; {resume}")
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise MetaConfigError(f"fairseq-train failed (exit {code}); its full log: {log_path}")
    return progress


def _script(name, *args):
    cmd = [sys.executable, str(REPO / "scripts" / name), *map(str, args)]
    code = subprocess.call(cmd, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if code != 0:
        raise MetaConfigError(f"scripts/{name} failed (exit {code}); its message is above")


def next_commands(run_dir, data):
    ckpt = run_dir / "checkpoints" / "checkpoint_best.pt"
    return [
        # fairseq-validate rebuilds the task and criterion saved in the checkpoint;
        # the stock names only get its parser past the flags.
        ("evaluate", f"fairseq-validate {data} --user-dir {USER_DIR} --task masked_lm "
                     f"--criterion masked_lm --path {ckpt} --batch-size 16 --cpu"),
        ("fine-tune", f"python scripts/prepare_glue.py --glue-dir GLUE_DIR --spm-model "
                      f"{data / 'spm.model'} --dict {data / 'dict.txt'} --destdir runs/glue && "
                      f"python scripts/finetune_glue.py --checkpoint {ckpt} --glue-data "
                      "runs/glue --out-dir runs/finetune --cpu"),
        ("use", f"RobertaModel.from_pretrained('{run_dir / 'model'}').fill_mask('... <mask> ...')"
                "   (README: Using the model afterwards)"),
    ]


def export_model(run_dir):
    """RUN_DIR/model (fairseq's hub interface) and, where transformers is installed,
    RUN_DIR/huggingface, from the best checkpoint; --force because a resumed run
    exports again."""
    ckpt = run_dir / "checkpoints" / "checkpoint_best.pt"
    if not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "checkpoint_last.pt"
    args = [ckpt, "--out-dir", run_dir / "model", "--force"]
    if importlib.util.find_spec("transformers") is not None:
        args += ["--huggingface", run_dir / "huggingface"]
    _script("export_model.py", *args)
    cli.log(f"model: {run_dir / 'model'}" + (f", {run_dir / 'huggingface'}"
                                             if "--huggingface" in map(str, args) else ""))


def build_argparser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--max-update", required=True, type=int)
    p.add_argument("--workers", type=int, default=1, help="processes for data preparation")
    p.add_argument("--extra-args", default="", help="extra fairseq-train flags, one string")
    p.add_argument("inputs", nargs="*", help="text files or directories (default: stdlib corpus)")
    return p


def main(argv=None):
    t0 = time.time()
    a = build_argparser().parse_args(argv)
    if a.max_update < 1:
        raise MetaConfigError(f"MAX_UPDATE must be a positive integer (got {a.max_update})")
    if a.workers < 1:
        raise MetaConfigError(f"WORKERS must be a positive integer (got {a.workers})")
    run_dir = a.run_dir.resolve()
    inputs = []
    for p in a.inputs:
        if not Path(p).exists():
            raise MetaConfigError(f"input not found: {p}")
        inputs.append(str(Path(p).resolve()))
    data = run_dir / "data"
    try:
        extra = shlex.split(a.extra_args)
    except ValueError as e:
        raise MetaConfigError(f"EXTRA_ARGS: {e}")
    argv_train = training_argv(data, run_dir, a.max_update, extra)
    args = parse_training_flags(argv_train)
    check_schedule(args, a.max_update)
    threads, why = intra_op_threads(jobs=1)
    reuse, fingerprint = data_plan(run_dir, inputs)

    scheduler = args.lr_scheduler + (f", warm-up {args.warmup_updates}"
                                     if getattr(args, "warmup_updates", 0) else "")
    order = f"{args.meta_order} order" if args.meta_train_steps else "plain MLM"
    cli.log(f"meta-pre-training, k={args.meta_train_steps} ({order}): {args.encoder_layers}-layer "
            f"{args.encoder_embed_dim}-dim RoBERTa, objective MLM"
            + (" + NSP" if args.sentence_objective == "nsp" else ""))
    cli.log("data: " + ("; ".join(inputs) or STDLIB_CORPUS) + f" -> {data}"
            + (" (reused: same content)" if reuse else ""))
    cli.log(f"{args.max_update} updates, mini-batch {args.batch_size} x {args.tokens_per_sample} "
            f"tokens, lr {args.lr[0]:g} ({scheduler}), seed {args.seed}")
    cli.log(f"threads: {threads} ({why})")
    cli.log(f"output: {run_dir} (full fairseq log: {run_dir / 'train.log'})")

    run_dir.mkdir(parents=True, exist_ok=True)
    t_data = time.time()
    if not reuse:
        stamp = run_dir / "data.inputs"
        stamp.unlink(missing_ok=True)
        sources = inputs
        if not inputs:
            corpus = run_dir / "corpus" / "stdlib-docstrings.txt"
            _script("stdlib_corpus.py", "--out", corpus)
            sources = [str(corpus)]
        _script("prepare_corpus.py", "--destdir", data, "--force", "--workers", a.workers,
                *sources)
        stamp.write_text(json.dumps(fingerprint, indent=1) + "\n")
    t_data = time.time() - t_data

    resuming = (run_dir / "checkpoints" / "checkpoint_last.pt").exists()
    before = None
    if not resuming and not args.disable_validation:
        before, n_params, vocab = initial_valid_loss(args, threads)
        cli.log(f"{n_params / 1e6:.2f}M parameters; valid loss before training: {before:.3f} bits "
                f"(a uniform guess over the {vocab} symbols: {math.log2(vocab):.3f})")
    t_train = time.time()
    progress = train(args, argv_train, run_dir, threads, run_dir / "train.log")
    t_train = time.time() - t_train

    cli.log(f"done in {duration(time.time() - t0)} (data {duration(t_data)}, training "
            f"{duration(t_train)})")
    if progress.valid:
        u, loss, best = progress.valid[-1]
        change = f"{before:.3f} bits before training -> " if before is not None else ""
        cli.log(f"valid loss: {change}{loss:.3f} at update {u}; best {best:.3f} "
                "(checkpoint_best.pt)")
    export_model(run_dir)
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    cli.log(f"checkpoints: {run_dir / 'checkpoints'}: {', '.join(ckpts)} "
            f"(best = lowest valid loss)")
    cli.log(f"data: {data} (sentencepiece model spm.model, dictionary dict.txt); "
            f"tensorboard --logdir {run_dir / 'tensorboard'}")
    cli.log("next:")
    for what, command in next_commands(run_dir, data):
        print(f"  {what + ':':10} {command}", flush=True)
    return 0


if __name__ == "__main__":
    run(PROG + ".sh", main)
