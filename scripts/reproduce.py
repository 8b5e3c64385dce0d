#!/usr/bin/env python3
"""Paper-style reproduction: does meta-pretraining (k > 0) give a better
initialisation for GLUE than ordinary multi-task pre-training (k = 0)?

Corpora and GLUE are prepared, pre-training runs with k = 0, 1, 2 (MLM and MLM+NSP,
at equal updates and at equal tokens processed), supervised meta pre-training with
k = 0 and 1, every checkpoint is fine-tuned on five GLUE tasks over seeds, and a
report with paired differences and plots is written. The stages are
fairseq_meta/experiment.py, the report fairseq_meta/report.py; this script parses
the flags and calls them.

Every finished step is skipped when the script runs again with the same OUT and
settings; an interrupted fairseq-train resumes. Other settings for an existing OUT
are an error.

    python scripts/reproduce.py --quick --out-dir runs/reproduce-quick   # ~10 min, 2 cores
    python scripts/reproduce.py --out-dir runs/reproduce                  # full (hours)
"""

import argparse
import logging
import time
from pathlib import Path

# Before fairseq is imported: some of its modules configure the root logger at
# INFO/DEBUG on import (and announce an optional tensorboardX).
logging.basicConfig(level=logging.WARNING)

from fairseq_meta import experiment, report  # noqa: E402
from fairseq_meta.cli import run  # noqa: E402
from fairseq_meta.errors import MetaConfigError  # noqa: E402

PROG = "reproduce.py"
MODES = experiment.MODES


def build_argparser():
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return experiment.add_mode_arguments(
        p, MODES,
        quick_help=("smaller model, fewer steps, one seed, GLUE cut to 400 rows: the "
                    "whole pipeline in minutes (what the test runs)"),
        data_root_help=("holds wikitext-2/, gutenberg/ and glue/ "
                    "(default: ../shared/data)"),
        jobs_help=("runs at once, one thread each unless OMP_NUM_THREADS is set "
                    "(default: number of CPUs)"),
        report_only_help="only rebuild the report from finished runs in --out-dir")


def main(argv=None):
    args = build_argparser().parse_args(argv)
    if args.jobs < 1:
        raise MetaConfigError(f"--jobs must be at least 1 (got {args.jobs})")
    settings = experiment.settings_for(
        args.quick, {key: getattr(args, key) for key in MODES["full"]}, args.data_root)
    exp = experiment.Experiment(out=Path(args.out_dir).resolve(), settings=settings,
                                quick=args.quick, jobs=args.jobs, data_root=Path(args.data_root))
    if args.report_only and not (exp.out / "settings.json").exists():
        raise MetaConfigError(f"{exp.out} holds no reproduction run (no settings.json)")
    try:
        import matplotlib  # noqa: F401 - checked now, not after hours of training
    except ImportError:
        raise MetaConfigError("the plots need matplotlib: pip install -e '.[repro]'")
    experiment.check_settings_file(exp)
    start = time.time()
    if not args.report_only:
        experiment.run(exp)
    report.write_report(exp)
    experiment.cli.log(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    run(PROG, main)
