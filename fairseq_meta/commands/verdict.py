"""Compare pre-training settings paired by pre-training seed, from the
results.json files of scripts/evaluate.py.

    python scripts/verdict.py --results runs/eval/results.json \\
        --compare "k1 vs k0=s{seed}-k1:s{seed}-k0" --seeds 1,2,3,4

Each checkpoint's score is its mean over evaluation seeds for --measurement and
--column; each comparison is treatment − baseline per pre-training seed, with a
95% t-interval over those seeds and the minimum detectable effect. The work is
fairseq_meta/evaluation/verdict.py.
"""
import argparse
import json
import logging

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.run.cli import run  # noqa: E402

PROG = "verdict"


def build_argparser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", required=True, help="results.json files of scripts/evaluate.py")
    p.add_argument("--compare", action="append", required=True, metavar="NAME=TREATMENT:BASELINE",
                   help="checkpoint label templates with {seed}; repeatable")
    p.add_argument("--seeds", required=True, help="comma-separated pre-training seeds")
    p.add_argument("--measurement", default="adaptation",
                   help="adaptation, finetune, probe, or fewshot-N (the few-shot runs with N examples "
                        "per task; seeds are its draws)")
    p.add_argument("--column", default="t=64", help="t=STEPS for adaptation; a GLUE task or 'average'")
    p.add_argument("--unit", help="of the differences (default: bits for adaptation, else points)")
    p.add_argument("--json", help="also write the comparisons here")
    return p


def main(argv=None):
    from fairseq_meta.errors import MetaConfigError
    from fairseq_meta.evaluation import verdict

    args = build_argparser().parse_args(argv)
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        raise MetaConfigError(f"--seeds needs at least 2 pre-training seeds (got {args.seeds!r})")
    specs = {}
    for item in args.compare:
        name, eq, pair = item.rpartition("=")  # the name may hold "=" ("t=0: ..."), templates do not
        treatment, colon, baseline = pair.partition(":")
        if not (eq and colon and "{seed}" in treatment and "{seed}" in baseline):
            raise MetaConfigError(f"--compare {item!r}: expected NAME=TREATMENT:BASELINE with {{seed}} in both")
        specs[name] = (treatment, baseline)
    scores = verdict.checkpoint_scores(verdict.load_raw(args.results, args.measurement), args.column)
    comparisons = {name: verdict.compare(scores, t, b, seeds) for name, (t, b) in specs.items()}
    print(f"{args.measurement}, {args.column}: treatment − baseline per pre-training seed")
    lower_is_better = args.measurement == "adaptation"  # bits; GLUE, probe and few-shot scores rise
    unit = args.unit or ("bits" if lower_is_better else "points")
    print("\n".join(verdict.table(comparisons, unit, "lower" if lower_is_better else "higher")))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"measurement": args.measurement, "column": args.column, "scores": scores,
                       "comparisons": comparisons}, f, indent=1)
    return 0


if __name__ == "__main__":  # python -m fairseq_meta.commands.verdict
    run(PROG, main)
