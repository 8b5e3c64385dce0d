"""Fine-tune a (meta-)pre-trained checkpoint on GLUE tasks and report dev-set metrics.

For every task x seed this runs ``fairseq-hydra-train`` (as ``python -m
fairseq_cli.hydra_train``) with the task's config from ``configs/finetune`` (fairseq's
RoBERTa GLUE recipe), adding what depends on the checkpoint — its model size and
max_positions, read from the checkpoint's own config — then loads the run's
``checkpoint_best.pt``, predicts the dev split(s) and scores them with the task's
metrics (``fairseq_meta/prep/glue.py``). Results: ``OUT/results.json`` (per task, split and
seed, with mean and std over seeds) and ``OUT/results.md`` (a table). All metrics are
reported x 100 (accuracy in %, correlations x 100), as GLUE does.

Data: ``GLUE_DATA/<TASK>/`` as written by ``scripts/prepare_glue.py`` (input0/,
input1/ for sentence pairs, label/, meta.json), binarized with the pre-training
dictionary. MNLI's valid1 (dev_mismatched) is scored too. A task needs its config,
``<config-dir>/<config>.yaml``; without ``--tasks`` the task directories that cannot be
fine-tuned (no config, evaluation data only, unknown) are skipped and named. The work
is done by :mod:`fairseq_meta.run.finetune`.

Example::

    python scripts/finetune_glue.py --checkpoint runs/pretrain-demo/checkpoints/checkpoint_best.pt \\
        --glue-data data-bin/glue --tasks RTE,MRPC --seeds 1,2,3 --out-dir runs/glue

    # anything after -- goes to every fairseq-hydra-train call as a hydra override
    python scripts/finetune_glue.py ... -- optimization.lr=[3e-5] dataset.batch_size=8

Per run (OUT/<TASK>/seed<S>/): train.log (fairseq's output), checkpoints/ (only
checkpoint_best.pt, without optimizer state, unless overridden after --), hydra/
(hydra's run dir with the composed config), eval.json.
"""
import argparse
import logging
import sys

# Importing fairseq_meta imports fairseq, whose text_to_speech task turns on INFO
# logging for the whole process; a script prints its own progress lines.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.run import finetune  # noqa: E402
from fairseq_meta.run.cli import Cli, run  # noqa: E402
from fairseq_meta.errors import MetaConfigError  # noqa: E402

PROG = "finetune_glue.py"


def build_argparser():
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fine-tune a pre-trained fairseq RoBERTa checkpoint on GLUE tasks "
        "with fairseq-hydra-train (configs/finetune) and report dev metrics over seeds. "
        "Arguments after -- are extra hydra overrides for every run.",
    )
    p.add_argument("--checkpoint", required=True, metavar="PRETRAINED.pt",
                   help="pre-trained checkpoint (meta_masked_lm / masked_lm, --arch roberta*)")
    p.add_argument("--glue-data", required=True, metavar="DIR",
                   help="directory with one binarized task per subdirectory "
                   "(scripts/prepare_glue.py's --destdir)")
    p.add_argument("--tasks", default=None, metavar="T1,T2",
                   help="comma-separated GLUE tasks (default: every task in --glue-data "
                   "that has a config in --config-dir and train data; the others are named)")
    p.add_argument("--seeds", default="1", metavar="S1,S2",
                   help="comma-separated seeds, one fine-tuning run each (default: 1)")
    p.add_argument("--out-dir", required=True, metavar="DIR")
    p.add_argument("--config-dir", default=str(finetune.DEFAULT_CONFIG_DIR), metavar="DIR",
                   help="hydra config directory with <task>.yaml (default: configs/finetune)")
    p.add_argument("--max-update", type=int, default=None, metavar="N",
                   help="override the recipe's number of updates; warm-up keeps the recipe's "
                   "share of them (6%%; QQP 25%%)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {finetune.QUICK_MAX_UPDATE} updates (or --max-update), batch "
                   f"size {finetune.QUICK_BATCH_SIZE}, log every update")
    p.add_argument("--cpu", action="store_true",
                   help="train and evaluate on CPU, in fp32 (automatic without CUDA)")
    p.add_argument("--eval-batch-size", type=int, default=32, metavar="N")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything, print the fairseq-hydra-train commands, run nothing")
    return p


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = build_argparser().parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise MetaConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers")
    tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    return finetune.Options(
        checkpoint=args.checkpoint, glue_data=args.glue_data, out_dir=args.out_dir, tasks=tasks,
        seeds=seeds, config_dir=args.config_dir, max_update=args.max_update, quick=args.quick,
        cpu=args.cpu, eval_batch_size=args.eval_batch_size, dry_run=args.dry_run,
        overrides=extra)


def main(argv=None):
    return finetune.finetune(parse_args(argv), log=Cli(PROG).log)


if __name__ == "__main__":  # python -m fairseq_meta.commands.finetune_glue
    run(PROG, main)
