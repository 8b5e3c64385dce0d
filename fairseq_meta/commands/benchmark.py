"""Throughput and peak memory of meta-pretraining against stock fairseq masked_lm.

Compares fairseq's stock ``masked_lm`` with ``meta_masked_lm`` at k = 0, 1, 2 (first
order) and k = 1, 2 (second order): same model, same mini-batch size, same data,
same machine, each through fairseq's own ``Trainer.train_step``.

Throughput: one process builds a Trainer per configuration and runs them
interleaved *update by update* (A, B, C, A, B, C, ...), timing each update, so
that load from elsewhere on the machine falls on every configuration alike;
--rounds such processes, the order rotated each round. Memory: one fresh process
per configuration (peak RSS on CPU, torch.cuda.max_memory_allocated on GPU).

Threads: OMP_NUM_THREADS when set, else one per idle core (fairseq_meta/run/threads.py);
the count is printed first and in the table's caption. The work is done in
fairseq_meta/experiments/benchmark.py.

Prints per configuration: tokens/s counting every token processed (meta-train and
meta-test mini-batches), updates/s, the tokens/s ratio to stock masked_lm (median of
the per-round ratios), peak memory and its excess over stock in parameter bytes.

  python scripts/benchmark.py --data DATA_BIN [--model small|base] [--rounds 3]
"""
import argparse
import json
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.experiments import benchmark  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402

PROG = "benchmark"


def build_argparser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="binarized corpus (fairseq-preprocess --only-source)")
    parser.add_argument("--model", choices=benchmark.MODELS, default="small")
    parser.add_argument("--configs", default=",".join(benchmark.CONFIGS),
                        help="comma-separated subset of: " + ", ".join(benchmark.CONFIGS))
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds (each a fresh process); the table shows the median")
    parser.add_argument("--updates", type=int, default=20, help="timed updates per configuration and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens-per-sample", type=int, default=128)
    parser.add_argument("--fp16", action="store_true", help="on a GPU: --fp16")
    parser.add_argument("--json", help="also write the raw measurements here")
    return parser


def main(argv=None):
    args = build_argparser().parse_args(argv)
    configs = benchmark.check(args)
    rounds, memory = benchmark.measure(args, configs, log=lambda m: print(m, flush=True))
    print("\n" + "\n".join(benchmark.table(args, configs, rounds, memory)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "throughput_rounds": rounds, "memory": memory}, f, indent=1)
    return 0


if __name__ == "__main__":  # python -m fairseq_meta.commands.benchmark
    run(PROG, main)
