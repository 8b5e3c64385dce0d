#!/usr/bin/env python3
"""Throughput and peak memory of meta-pretraining against stock fairseq masked_lm.

Compares fairseq's stock ``masked_lm`` with ``meta_masked_lm`` at k = 0, 1, 2 (first
order) and k = 1, 2 (second order): same model, same mini-batch size, same data,
same machine, each through fairseq's own ``Trainer.train_step``.

Throughput: one process builds a Trainer per configuration and runs them
interleaved *update by update* (A, B, C, A, B, C, ...), timing each update, so
that load from elsewhere on the machine falls on every configuration alike;
--rounds such processes, the order rotated each round. Memory: one fresh process
per configuration (peak RSS on CPU, torch.cuda.max_memory_allocated on GPU).

Prints per configuration: tokens/s counting every token processed (support and
query mini-batches), updates/s, the tokens/s ratio to stock masked_lm (median of
the per-round ratios), peak memory and its excess over stock in parameter bytes.

  python scripts/benchmark.py --data DATA_BIN [--model small|base] [--rounds 3]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_meta")

CONFIGS = {
    "masked_lm": ["--task", "masked_lm", "--criterion", "masked_lm", "--optimizer", "adam"],
    "k0": ["--meta-train-steps", "0"],
    "k1-first": ["--meta-train-steps", "1"],
    "k2-first": ["--meta-train-steps", "2"],
    "k1-second": ["--meta-train-steps", "1", "--meta-order", "second"],
    "k2-second": ["--meta-train-steps", "2", "--meta-order", "second"],
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
           "--lr", "1e-4", "--seed", "1", "--num-workers", "0", "--disable-validation"]
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
    batches = sample["support"] + [sample["query"]] if "query" in sample else [sample]
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


def _run_worker(args, mode, what):
    cmd = [sys.executable, __file__, "--worker", mode, "--what", what, "--data", args.data,
           "--model", args.model, "--updates", str(args.updates), "--warmup", str(args.warmup),
           "--batch-size", str(args.batch_size), "--tokens-per-sample", str(args.tokens_per_sample)]
    cmd += ["--fp16"] if args.fp16 else []
    if mode == "memory":  # memory needs only a few updates past the warm-up
        cmd[cmd.index("--updates") + 1] = str(min(args.updates, 3))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if proc.returncode != 0:
        sys.exit(f"benchmark: error: {mode} {what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="binarized corpus (fairseq-preprocess --only-source)")
    parser.add_argument("--model", choices=MODELS, default="small")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds (each a fresh process); the table shows the median")
    parser.add_argument("--updates", type=int, default=20, help="timed updates per configuration and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens-per-sample", type=int, default=128)
    parser.add_argument("--fp16", action="store_true", help="on a GPU: --fp16")
    parser.add_argument("--json", help="also write the raw measurements here")
    parser.add_argument("--worker", choices=["throughput", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "throughput":
        return throughput_worker(args, args.what.split(","))
    if args.worker == "memory":
        return memory_worker(args, args.what)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not os.path.isdir(args.data):
        sys.exit(f"benchmark: error: {'unknown config ' + ', '.join(unknown) if unknown else 'data directory not found: ' + args.data}")
    if min(args.rounds, args.updates) < 1 or args.warmup < 0:
        sys.exit("benchmark: error: --rounds and --updates must be >= 1, --warmup >= 0")
    if "masked_lm" not in configs:
        configs.insert(0, "masked_lm")

    rounds = []
    for r in range(args.rounds):
        # rotate the order, so that no configuration is always first after another
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        result = _run_worker(args, "throughput", ",".join(order))
        rounds.append(result)
        print(f"[benchmark] throughput round {r + 1}/{args.rounds}: " + ", ".join(
            f"{c} {result['tokens'][c] / result['seconds'][c]:.0f} tok/s" for c in configs), flush=True)
    memory = {}
    for config in configs:
        memory[config] = _run_worker(args, "memory", config)
        print(f"[benchmark] memory {config}: peak {memory[config]['peak_bytes'] / 2**20:.0f} MiB", flush=True)

    def tok_s(config, r):
        return r["tokens"][config] / r["seconds"][config]

    def median(config, fn):
        return statistics.median(fn(config, r) for r in rounds)

    param_bytes = memory["masked_lm"]["param_bytes"]
    base_mem = memory["masked_lm"]["peak_bytes"]
    device = rounds[0]["device"]
    kind = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS"
    print(f"\nmodel {args.model} ({param_bytes / 4 / 1e6:.2f}M parameters, {param_bytes / 2**20:.1f} MiB fp32), "
          f"batch {args.batch_size} x {args.tokens_per_sample} tokens, device {device} "
          f"({rounds[0]['threads']} intra-op threads){' fp16' if args.fp16 else ''}; throughput: "
          f"{args.updates} timed updates per configuration and round, all configurations "
          f"alternating update by update in one process, median of {args.rounds} rounds; "
          f"memory: {kind} of a fresh process per configuration\n")
    print(f"| config | tokens/s (all) | updates/s | tokens/s ratio (median of per-round ratios) | "
          f"{kind} (MiB) | peak − stock (× param bytes) |")
    print("|---|---:|---:|---:|---:|---:|")
    for config in configs:
        ratio = median(config, lambda c, r: tok_s(c, r) / tok_s("masked_lm", r))
        ups = median(config, lambda c, r: r["updates"] / r["seconds"][c])
        mem = memory[config]["peak_bytes"]
        print(f"| {config} | {median(config, tok_s):.0f} | {ups:.2f} | {ratio:.3f} | {mem / 2**20:.0f} | "
              f"{(mem - base_mem) / param_bytes:+.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "throughput_rounds": rounds, "memory": memory}, f, indent=1)


if __name__ == "__main__":
    main()
