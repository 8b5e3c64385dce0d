"""Throughput and peak memory of meta-pretraining against stock fairseq masked_lm
(``scripts/benchmark.py`` parses the flags and calls :func:`check`, :func:`measure`
and :func:`table`).

Compares fairseq's stock ``masked_lm`` with ``meta_masked_lm`` at k = 0, 1, 2 (first
order), k = 1, 2 (second order), Reptile (k = 1, 2) and first order with a learned α
(per tensor, per weight): same model, same mini-batch size, same data,
same machine, each through fairseq's own ``Trainer.train_step``.

Throughput: one worker process builds a Trainer per configuration and runs them
interleaved *update by update* (A, B, C, A, B, C, ...), timing each update, so
that load from elsewhere on the machine falls on every configuration alike;
``rounds`` such processes, the order rotated each round. Memory: one fresh process
per configuration (peak RSS on CPU, torch.cuda.max_memory_allocated on GPU). The
workers get their thread count from :mod:`fairseq_meta.run.threads`.
"""
import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from ..errors import MetaConfigError
from ..run.paths import USER_DIR as _USER_DIR
from ..run.threads import intra_op_threads, thread_env

USER_DIR = str(_USER_DIR)

CONFIGS = {
    "masked_lm": ["--task", "masked_lm", "--criterion", "masked_lm", "--optimizer", "adam"],
    "k0": ["--meta-train-steps", "0"],
    "k1-first": ["--meta-train-steps", "1"],
    "k2-first": ["--meta-train-steps", "2"],
    "k1-second": ["--meta-train-steps", "1", "--meta-order", "second"],
    "k2-second": ["--meta-train-steps", "2", "--meta-order", "second"],
    "k1-reptile": ["--meta-train-steps", "1", "--meta-objective", "reptile"],
    "k2-reptile": ["--meta-train-steps", "2", "--meta-objective", "reptile"],
    "k1-first-learned-tensor": ["--meta-train-steps", "1", "--inner-lr-learned", "tensor"],
    "k1-first-learned-coordinate": ["--meta-train-steps", "1", "--inner-lr-learned", "coordinate"],
}
META = ["--task", "meta_masked_lm", "--criterion", "meta_masked_lm", "--optimizer", "meta_adam",
        "--inner-lr", "1e-3"]
MODELS = {
    "small": ["--encoder-layers", "2", "--encoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
              "--encoder-attention-heads", "2"],
    "base": ["--encoder-layers", "12", "--encoder-embed-dim", "768", "--encoder-ffn-embed-dim", "3072",
             "--encoder-attention-heads", "12"],
}


def build(args, config):
    """fairseq's Trainer for one configuration, and the mini-batches (episodes) it will run."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    flags = CONFIGS[config] if config == "masked_lm" else META + CONFIGS[config]
    parser = options.get_training_parser()
    cli = [args.data, "--user-dir", USER_DIR, "--arch", "roberta_base", *MODELS[args.model], *flags,
           "--tokens-per-sample", str(args.tokens_per_sample), "--batch-size", str(args.batch_size),
           "--lr", "1e-4", "--seed", "1", "--num-workers", "0", "--disable-validation",
           # where fairseq writes crash.pt when a step fails: a directory that exists, so
           # that the step's own error is what gets reported
           "--save-dir", args.save_dir]
    if not torch.cuda.is_available():
        cli.append("--cpu")
    elif args.fp16:
        cli.append("--fp16")
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, cli))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    itr = trainer.get_train_iterator(epoch=1, load_dataset=True).next_epoch_itr(shuffle=True)
    # Batches are made (masked, collated) before timing: both sides pay the same
    # per-mini-batch data cost, which is not what is compared here.
    samples = [next(itr) for _ in range(args.warmup + args.updates)]
    return trainer, samples, sum(p.numel() for p in model.parameters())


def n_tokens(sample):
    if "meta_train" not in sample:
        return int(sample["ntokens"])
    batches = sample["meta_train"] + ([sample["meta_test"]] if sample["meta_test"] is not None else [])
    return sum(int(b["ntokens"]) for b in batches)


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def throughput_worker(args, configs):
    """All configurations in one process, alternating update by update (A, B, C, A, B, C,
    ...), so that whatever else the machine does slows every configuration alike.
    Prints one JSON line: per configuration, tokens and seconds of the timed updates."""
    import torch

    built = {c: build(args, c) for c in configs}
    for c in configs:
        for sample in built[c][1][: args.warmup]:
            built[c][0].train_step([sample])
    seconds = {c: 0.0 for c in configs}
    tokens = {c: 0 for c in configs}
    for i in range(args.warmup, args.warmup + args.updates):
        for c in configs:
            trainer, samples, _ = built[c]
            _sync()
            start = time.perf_counter()
            trainer.train_step([samples[i]])
            _sync()
            seconds[c] += time.perf_counter() - start
            tokens[c] += n_tokens(samples[i])
    print(json.dumps({"seconds": seconds, "tokens": tokens, "updates": args.updates,
                      "param_bytes": built[configs[0]][2] * 4, "threads": torch.get_num_threads(),
                      "device": "cuda" if torch.cuda.is_available() else "cpu"}))


def memory_worker(args, config):
    """One configuration in a fresh process: its peak memory over warm-up + updates
    (RSS on CPU, torch.cuda.max_memory_allocated on GPU). Prints one JSON line."""
    import torch

    trainer, samples, n_params = build(args, config)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for sample in samples:
        trainer.train_step([sample])
    _sync()
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"config": config, "peak_bytes": peak, "param_bytes": n_params * 4}))


def run_worker(args, mode, what, env=None):
    """One worker process (``python -m fairseq_meta.experiments.benchmark --worker ...``); its JSON line."""
    cmd = [sys.executable, "-m", "fairseq_meta.experiments.benchmark", "--worker", mode, "--what", what,
           "--data", args.data, "--model", args.model, "--updates", str(args.updates),
           "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
           "--tokens-per-sample", str(args.tokens_per_sample)]
    cmd += ["--fp16"] if args.fp16 else []
    if mode == "memory":  # memory needs only a few updates past the warm-up
        cmd[cmd.index("--updates") + 1] = str(min(args.updates, 3))
    env = dict(os.environ if env is None else env, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MetaConfigError(f"{mode} {what} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(args):
    """The configurations to run (stock masked_lm always first); one-line errors."""
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise MetaConfigError(f"unknown config {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    if not os.path.isdir(args.data):
        raise MetaConfigError(f"data directory not found: {args.data}")
    if min(args.rounds, args.updates) < 1 or args.warmup < 0:
        raise MetaConfigError("--rounds and --updates must be >= 1, --warmup >= 0")
    if "masked_lm" not in configs:
        configs.insert(0, "masked_lm")
    return configs


def measure(args, configs, log=print):
    """(throughput rounds, memory per configuration, threads and why)."""
    threads, why = intra_op_threads(jobs=1)
    env = thread_env(threads)
    log(f"[benchmark] {threads} intra-op thread(s): {why}")
    rounds = []
    for r in range(args.rounds):
        # rotate the order, so that no configuration is always first after another
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        result = run_worker(args, "throughput", ",".join(order), env)
        rounds.append(result)
        log(f"[benchmark] throughput round {r + 1}/{args.rounds}: " + ", ".join(
            f"{c} {result['tokens'][c] / result['seconds'][c]:.0f} tok/s" for c in configs))
    memory = {}
    for config in configs:
        memory[config] = run_worker(args, "memory", config, env)
        log(f"[benchmark] memory {config}: peak {memory[config]['peak_bytes'] / 2**20:.0f} MiB")
    return rounds, memory


def table(args, configs, rounds, memory):
    """The markdown table with its one-paragraph caption, as lines."""

    def tok_s(config, r):
        return r["tokens"][config] / r["seconds"][config]

    def median(config, fn):
        return statistics.median(fn(config, r) for r in rounds)

    param_bytes = memory["masked_lm"]["param_bytes"]
    base_mem = memory["masked_lm"]["peak_bytes"]
    device = rounds[0]["device"]
    kind = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS"
    lines = [
        f"model {args.model} ({param_bytes / 4 / 1e6:.2f}M parameters, "
        f"{param_bytes / 2**20:.1f} MiB fp32), batch {args.batch_size} x "
        f"{args.tokens_per_sample} tokens, device {device} ({rounds[0]['threads']} intra-op "
        f"threads){' fp16' if args.fp16 else ''}; throughput: {args.updates} timed updates "
        "per configuration and round, all configurations alternating update by update in one "
        f"process, median of {args.rounds} rounds; memory: {kind} of a fresh process per "
        "configuration", "",
        f"| config | tokens/s (all) | updates/s | tokens/s ratio (median of per-round ratios) | "
        f"{kind} (MiB) | peak − stock (× param bytes) |",
        "|---|---:|---:|---:|---:|---:|"]
    for config in configs:
        ratio = median(config, lambda c, r: tok_s(c, r) / tok_s("masked_lm", r))
        ups = median(config, lambda c, r: r["updates"] / r["seconds"][c])
        mem = memory[config]["peak_bytes"]
        lines.append(f"| {config} | {median(config, tok_s):.0f} | {ups:.2f} | {ratio:.3f} | "
                     f"{mem / 2**20:.0f} | {(mem - base_mem) / param_bytes:+.2f} |")
    return lines


def _worker_main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fairseq_meta.experiments.benchmark")
    p.add_argument("--worker", choices=["throughput", "memory"], required=True)
    p.add_argument("--what", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--model", choices=MODELS, required=True)
    for flag in ("--updates", "--warmup", "--batch-size", "--tokens-per-sample"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--fp16", action="store_true")
    args = p.parse_args(argv)
    # where fairseq writes crash.pt when a step fails (see build); removed with the worker
    with tempfile.TemporaryDirectory(prefix="fairseq_meta-benchmark-") as args.save_dir:
        if args.worker == "throughput":
            return throughput_worker(args, args.what.split(","))
        return memory_worker(args, args.what)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _worker_main()
