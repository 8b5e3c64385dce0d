"""Score pre-trained checkpoints: fine-tuning, few-shot, frozen-feature probe and
adaptation to a new domain, with confidence intervals over seeds and paired
differences to the first checkpoint.

    python scripts/evaluate.py runs/pre/checkpoints/checkpoint_1_1000.pt \\
        runs/pre/checkpoints/checkpoint_2_4000.pt --out-dir runs/eval

Re-running with the same --out-dir skips every finished unit. The work is
fairseq_meta/evaluation/ (see README, "Evaluating a checkpoint").
"""
import argparse


PROG = "evaluate"


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def build_argparser():
    from fairseq_meta.evaluation.runner import MEASUREMENTS, Settings

    d = Settings(checkpoints=[], out_dir="")
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                   help="checkpoint files, optionally NAME=PATH; the first is the baseline of the paired differences")
    p.add_argument("--out-dir", help="results.json, results.md, plots, per-unit results (resumable)")
    p.add_argument("--make-untrained", nargs=2, metavar=("FROM", "OUT"),
                   help="write the untrained initialisation of FROM's architecture (its seed) to OUT and exit")
    p.add_argument("--measurements", default=",".join(MEASUREMENTS),
                   help=f"comma-separated subset of {','.join(MEASUREMENTS)} (default: all)")
    p.add_argument("--glue-dir", default=d.glue_dir, help="GLUE TSV layout (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(d.tasks))
    p.add_argument("--dict", dest="dict_path", help="pre-training dict.txt (default: next to the checkpoint's data)")
    p.add_argument("--tokenizer", "--spm-model", dest="tokenizer",
                   help="pre-training spm.model, or the tokenizer.json of an imported model "
                   "(default: next to the checkpoint's data)")
    p.add_argument("--config-dir", default=d.config_dir)
    p.add_argument("--glue-max-rows", type=int, default=None, help="read at most N rows per GLUE split")
    g = p.add_argument_group("1. fine-tuning")
    g.add_argument("--ft-seeds", type=int, default=d.ft_seeds)
    g.add_argument("--ft-epochs", type=int, default=d.ft_epochs)
    g.add_argument("--ft-lr", type=float, default=d.ft_lr)
    g.add_argument("--ft-batch-size", type=int, default=d.ft_batch_size)
    g.add_argument("--ft-max-train", type=int, default=d.ft_max_train,
                   help="train on a fixed draw of at most N examples per task (default: %(default)s)")
    g = p.add_argument_group("2. few-shot")
    g.add_argument("--fs-sizes", type=_ints, default=d.fs_sizes)
    g.add_argument("--fs-draws", type=int, default=d.fs_draws)
    g.add_argument("--fs-epochs", type=int, default=d.fs_epochs)
    g.add_argument("--fs-min-updates", type=int, default=d.fs_min_updates)
    g.add_argument("--fs-lr", type=float, default=d.fs_lr)
    g.add_argument("--fs-batch-size", type=int, default=d.fs_batch_size)
    g = p.add_argument_group("3. probe")
    g.add_argument("--probe-max-train", type=int, default=None)
    g.add_argument("--probe-bootstrap", type=int, default=d.probe_bootstrap)
    g = p.add_argument_group("4. adaptation to a new domain")
    g.add_argument("--domain-train", default=d.domain_train)
    g.add_argument("--domain-eval", default=d.domain_eval)
    g.add_argument("--ad-steps", type=_ints, default=d.ad_steps)
    g.add_argument("--ad-seeds", type=int, default=d.ad_seeds)
    g.add_argument("--ad-lr", type=float, default=d.ad_lr)
    g.add_argument("--ad-batch-size", type=int, default=d.ad_batch_size)
    g.add_argument("--ad-eval-blocks", type=int, default=d.ad_eval_blocks)
    g.add_argument("--ad-block-tokens", type=int, default=None,
                   help="tokens per block (default: the checkpoint's max positions - 1); the block "
                        "length the checkpoints were pre-trained on, where that is shorter")
    p.add_argument("--target-effect", type=float, default=d.target_effect,
                   help="the effect (score points) the comparisons should detect; the report gives "
                        "the seeds or draws each needs for it (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="units run side by side, one thread each")
    p.add_argument("--device", default=d.device,
                   help="cpu or cuda: where every unit runs, in fp32; GPU units are kept apart from "
                        "CPU units (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    return p


def main(argv=None):
    from fairseq_meta.run.cli import Cli
    from fairseq_meta.errors import MetaConfigError
    from fairseq_meta.evaluation.runner import Settings, evaluate

    args = build_argparser().parse_args(argv)
    cli = Cli(PROG)
    if args.make_untrained:
        from fairseq_meta.evaluation.model import make_untrained

        cli.log(f"untrained initialisation written to {make_untrained(*args.make_untrained)}")
        return 0
    if not args.checkpoints or not args.out_dir:
        raise MetaConfigError("give CHECKPOINT(s) and --out-dir")
    values = {k: v for k, v in vars(args).items() if k != "make_untrained"}
    values["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    values["measurements"] = [m.strip() for m in args.measurements.split(",") if m.strip()]
    evaluate(Settings(**values), log=cli.log)
    return 0


if __name__ == "__main__":  # python -m fairseq_meta.commands.evaluate
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")

    logging.getLogger("fairseq").setLevel(logging.WARNING)
    from fairseq_meta.run.cli import run

    run(PROG, main)
