#!/usr/bin/env python3
"""Throughput and peak memory of meta-pretraining against stock fairseq masked_lm.

Runs, interleaved (A, B, C, ... then again, --rounds times), fairseq's stock
``masked_lm`` and ``meta_masked_lm`` with k = 0, 1, 2 (first order) and k = 1, 2
(second order): same model, same mini-batch size, same data, same machine. Each
measurement is a fresh process (so peak RSS is its own) that builds fairseq's
Trainer, runs --warmup updates, then times --updates updates.

Prints per configuration (median over rounds): tokens/s counting every token
processed (support and query mini-batches), updates/s, peak memory (RSS on CPU,
torch.cuda.max_memory_allocated on GPU) and the ratios to stock masked_lm.

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


def worker(args):
    """One measurement, in its own process; prints one JSON line."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    flags = CONFIGS[args.config] if args.config == "masked_lm" else META + CONFIGS[args.config]
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
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=True)
    itr = epoch_itr.next_epoch_itr(shuffle=True)

    def tokens(sample):
        batches = sample["support"] + [sample["query"]] if "query" in sample else [sample]
        return sum(int(b["ntokens"]) for b in batches)

    samples = [next(itr) for _ in range(args.warmup + args.updates)]
    for sample in samples[: args.warmup]:
        trainer.train_step([sample])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    n_tokens = 0
    for sample in samples[args.warmup:]:
        trainer.train_step([sample])
        n_tokens += tokens(sample)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"config": args.config, "tokens_per_s": n_tokens / elapsed,
                      "updates_per_s": args.updates / elapsed, "peak_bytes": peak,
                      "param_bytes": n_params * 4, "device": "cuda" if torch.cuda.is_available() else "cpu",
                      "threads": torch.get_num_threads()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="binarized corpus (fairseq-preprocess --only-source)")
    parser.add_argument("--model", choices=MODELS, default="small")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens-per-sample", type=int, default=128)
    parser.add_argument("--fp16", action="store_true", help="on a GPU: --fp16")
    parser.add_argument("--json", help="also write the raw measurements here")
    parser.add_argument("--worker", dest="config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config:
        return worker(args)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not os.path.isdir(args.data):
        sys.exit(f"benchmark: error: {'unknown config ' + ', '.join(unknown) if unknown else 'data directory not found: ' + args.data}")
    if "masked_lm" not in configs:
        configs.insert(0, "masked_lm")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    runs = {c: [] for c in configs}
    for r in range(args.rounds):
        for config in configs:  # interleaved: A, B, C, ..., A, B, C, ...
            cmd = [sys.executable, __file__, "--worker", config, "--data", args.data, "--model", args.model,
                   "--updates", str(args.updates), "--warmup", str(args.warmup),
                   "--batch-size", str(args.batch_size), "--tokens-per-sample", str(args.tokens_per_sample)]
            cmd += ["--fp16"] if args.fp16 else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"benchmark: error: {config} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[config].append(result)
            print(f"[benchmark] round {r + 1}/{args.rounds} {config}: {result['tokens_per_s']:.0f} tok/s, "
                  f"{result['updates_per_s']:.2f} upd/s, peak {result['peak_bytes'] / 2**20:.0f} MiB", flush=True)

    def med(config, key):
        return statistics.median(x[key] for x in runs[config])

    base_tok, base_mem = med("masked_lm", "tokens_per_s"), med("masked_lm", "peak_bytes")
    param_bytes = runs["masked_lm"][0]["param_bytes"]
    print(f"\nmodel {args.model} ({param_bytes / 4 / 1e6:.2f}M parameters, {param_bytes / 2**20:.1f} MiB fp32), "
          f"batch {args.batch_size} x {args.tokens_per_sample} tokens, {args.updates} timed updates, "
          f"median of {args.rounds} interleaved rounds, device {runs['masked_lm'][0]['device']}"
          f" ({runs['masked_lm'][0].get('threads')} intra-op threads)\n")
    print("| config | tokens/s (all) | updates/s | peak memory (MiB) | tokens/s ratio | peak − stock (× param bytes) |")
    print("|---|---:|---:|---:|---:|---:|")
    for config in configs:
        tok, upd, mem = med(config, "tokens_per_s"), med(config, "updates_per_s"), med(config, "peak_bytes")
        print(f"| {config} | {tok:.0f} | {upd:.2f} | {mem / 2**20:.0f} | {tok / base_tok:.3f} | "
              f"{(mem - base_mem) / param_bytes:+.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
