"""The meta-pretraining verdict of docs/results.md (issue 10) in one command:
Gutenberg corpus, a sweep of inner settings at pre-training seed 1, the automatic
selection (lowest validation loss at θ), k = 0 against the selected k = 1 on fresh
pre-training seeds, the same pair with MLM + NSP, supervised meta-training
(meta_sentence_prediction on three GLUE tasks) with k = 0 and the selected k = 1
fine-tuned on held-out tasks, the evaluation of every checkpoint, and a report with
the sweep table, comparisons paired by pre-training seed and two plots.

The stages are fairseq_meta/experiments/reproduce_verdict/; this script parses the flags.
Every finished step is skipped when the script runs again with the same OUT and
settings; an interrupted fairseq-train resumes from its checkpoint_last.pt. Other
settings for an existing OUT are an error.

    python scripts/reproduce_verdict.py --quick --out-dir runs/verdict-quick  # minutes, 2 cores
    python scripts/reproduce_verdict.py --out-dir runs/verdict --jobs 8        # the hand-run design

--supervised-only (with --init-from) runs the supervised phase and its held-out
evaluation alone, k = 1 the one inner setting listed (docs/verdict.md).
"""
import argparse
import logging
from pathlib import Path

# Before fairseq is imported: some of its modules configure the root logger on import.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.experiments import experiment, reproduce_verdict as ve  # noqa: E402
from fairseq_meta.run.cli import run  # noqa: E402
from fairseq_meta.errors import MetaConfigError  # noqa: E402

PROG = "reproduce_verdict.py"
MODES = ve.MODES


def build_argparser():
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_mode_arguments(
        p, MODES,
        quick_help=("tiny model, 8 updates, seeds 1 and 2, 2 inner settings, GLUE cut to 120 "
                    "rows, tiny evaluation: the whole pipeline in minutes (what the test runs)"),
        data_root_help=("holds gutenberg/, wikitext-2/ and glue/ (default: ../shared/data)"),
        jobs_help=("steps at once, one thread each unless OMP_NUM_THREADS is set "
                    "(default: number of CPUs)"),
        report_only_help="only rebuild the report from the finished runs and evaluation in --out-dir")
    p.add_argument("--supervised-only", action="store_true",
                   help=("only the supervised phase (stage 5) from --init-from and its held-out "
                         "evaluation: no corpus, MLM runs or sweep; k = 1 is the one inner setting "
                         "listed (e.g. --sgd-inner-lrs '' --adam-inner-lrs '' --reptile-inner-lrs 0.01)"))
    return p


def main(argv=None):
    args = build_argparser().parse_args(argv)
    if args.jobs < 1:
        raise MetaConfigError(f"--jobs must be at least 1 (got {args.jobs})")
    settings, derived = ve.settings_for(
        args.quick, {key: getattr(args, key) for key in MODES["full"]}, args.data_root)
    exp = ve.VerdictExperiment(out=Path(args.out_dir).resolve(), settings=settings, derived=derived,
                               quick=args.quick, jobs=args.jobs, data_root=Path(args.data_root))
    # refused now, before any check that takes longer
    given = ve.given_setting(derived) if args.supervised_only else None
    if args.report_only and not (exp.out / "settings.json").exists():
        raise MetaConfigError(f"{exp.out} holds no verdict run (no settings.json)")
    import importlib.util

    # checked now, not after hours of training: the evaluation and the plots need them
    missing = [m for m in ("matplotlib", "scipy", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MetaConfigError(f"the evaluation and plots need {', '.join(missing)}: "
                              "pip install -e '.[repro]'")
    if not args.report_only:
        from ..evaluation.runner import check_device

        check_device(settings["device"])
    experiment.check_settings_file(exp, added=ve.ADDED_SETTINGS)
    ve.run(exp, report_only=args.report_only, given=given)
    return 0


if __name__ == "__main__":  # python -m fairseq_meta.commands.reproduce_verdict
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    run(PROG, main)
