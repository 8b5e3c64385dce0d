"""The meta-pretraining verdict of docs/results.md ("Verdict (issue 10)") as one
resumable command, ``scripts/reproduce_verdict.py``.

One module per part: ``settings.py`` (the modes and their checks), ``runs.py``
(stages 1, 2, 4, 5: the runs and their commands), ``sweep.py`` (stage 3, the
selection), ``evaluate_runs.py`` (stage 6), ``report.py`` (stage 7); :func:`run`
below runs them in order. fairseq-train and scripts/prepare_corpus.py run as
subprocesses through the machinery of :mod:`fairseq_meta.experiments.experiment`
(``.done`` markers, ``--jobs``, one thread per job, the settings file).

1. data      the Gutenberg books as one corpus (scripts/prepare_corpus.py) -> OUT/data
2. sweep     pre-training seed ``sweep_seed``: k = 0 to 2U updates (checkpoints every
             ``checkpoint_interval``, so U and 2U exist) and k = 1 first order for
             every inner setting (plain SGD α, Adam-preconditioned α, learned α;
             Reptile at k = 2, the same 2 mini-batches an update) to U updates
             (behind them in the queue, the runs of stage 4 that do not depend on the
             selection: k = 0 of the fresh seeds, and of every seed with NSP)
3. select    among the first-order sweep runs, the lowest validation loss at θ
             (``valid_loss`` of the ``| valid |`` log records) at the largest
             validation update that every one of them reached; ties go to the
             setting listed first                                  -> OUT/selection.json
4. verdict   k = 2 and k = 1 second order at the selected setting (seed ``sweep_seed``,
             U updates; ``--extras 0`` leaves them out), and k = 0 (2U) and the selected k = 1 (U) for every fresh
             pre-training seed; with ``--nsp 1`` the same k = 0 / selected k = 1
             pair with ``--sentence-objective nsp`` for every seed (sweep seed too)
5. supervised unless ``--supervised-tasks`` is empty: those GLUE tasks binarized
             with the corpus dictionary (scripts/prepare_glue.py) -> OUT/glue, and
             ``meta_sentence_prediction`` on them with k = 0 and the selected k = 1,
             both from s{seed}-k0 at U (with --init-from: from the imported model),
             for every seed, then each k = 0 run continued to twice its updates
             (equal examples)                                   -> OUT/supervised
6. evaluate  :func:`fairseq_meta.evaluation.evaluate`: adaptation on every
             pre-training checkpoint (-> OUT/eval); with ``--ft-tasks``, GLUE
             fine-tuning and few-shot (``--fs-sizes``) of the equal-updates pairs and
             the imported model (-> OUT/eval-glue); the same measurements of the
             supervised checkpoints (and the imported model) on ``--heldout-tasks``
             (-> OUT/eval-supervised); resumable per unit
7. report    sweep table, verdict comparisons paired by pre-training seed
             (:mod:`fairseq_meta.evaluation.verdict`) for MLM, MLM + NSP, GLUE and
             the supervised phase, and two plots
             -> OUT/results.md, results.json, verdict_headline_vs_tokens.png,
                sweep_adaptation_gain.png

``--supervised-only`` (with --init-from): stage 5, its evaluation and a report of it
alone; k = 1 is the one inner setting listed, not a selection.

Checkpoint labels of the evaluation: ``s{seed}-k0`` (k = 0 at U), ``s{seed}-k0-2U``
(k = 0 at 2U, the tokens of k = 1 at U), ``s{seed}-k1`` (the selected setting at U, at its own k;
for the sweep seed this is the selected sweep run) and, for the other sweep runs,
``s{seed}-k{k}-{setting}[-second]``; MLM + NSP: ``s{seed}-k0-nsp``,
``s{seed}-k0-nsp-2U``, ``s{seed}-k1-nsp``; supervised: ``s{seed}-sup-k0``,
``s{seed}-sup-k1``, ``s{seed}-sup-k0-2U``. A checkpoint is evaluated once, under one label.
"""
import os
import time

from ...run.threads import intra_op_threads, thread_env
from ..experiment import run_parallel
from .evaluate_runs import (  # noqa: F401
    adaptation_block_tokens, checkpoints_to_evaluate, measurements, nsp_checkpoints_to_evaluate, stage_evaluate,
    stage_evaluate_supervised, supervised_checkpoints,
)
from .report import (  # noqa: F401
    nsp_comparisons, supervised_comparisons, supervised_own_task_comparisons, supervised_section, supervised_training,
    sweep_rows, tokens_at, verdict_comparisons, write_report, write_supervised_report,
)
from .runs import (  # noqa: F401
    after_selection_runs, all_seeds, describe, device_flags, inner_flags, meta_steps, nsp_runs, run_name,
    selection_free_runs, stage_data, stage_glue, supervised_cmd, supervised_equal_examples_cmd,
    supervised_start_flags, sweep_runs, train_cmd, vocabulary_files,
)
from .settings import (  # noqa: F401
    ADDED_SETTINGS, MODES, PRECONDITIONERS, SUMMARY_WINDOW, SWEEP_KINDS, VerdictExperiment, cli, given_setting,
    settings_for,
)
from .sweep import read_log, read_run_log, select, stage_select  # noqa: F401


def run(exp, report_only=False, given=None):
    """Every stage; finished steps are skipped. ``given`` (``--supervised-only``): the
    k = 1 inner setting, taken as given (:func:`given_setting`); only stage 5 and its
    evaluation run."""
    threads, why = intra_op_threads(jobs=exp.jobs)
    env = thread_env(threads, {**os.environ, "PYTHONUNBUFFERED": "1"})
    cli.log(f"output: {exp.out} ({'quick' if exp.quick else 'full'} mode, {exp.jobs} jobs at a "
            f"time, {threads} thread(s) each: {why})")
    start = time.time()
    if given is not None:
        _run_supervised_only(exp, env, report_only, given)
        cli.log(f"done in {time.time() - start:.0f}s; report: {exp.out / 'results.md'}")
        return
    if not report_only:
        stage_data(exp, env)
        free = selection_free_runs(exp)
        run_parallel([train_cmd(exp, *r) for r in sweep_runs(exp) + free], exp.jobs, env)
    selected = stage_select(exp)
    if not report_only:
        run_parallel([train_cmd(exp, *r) for r in after_selection_runs(exp, selected)
                      + nsp_runs(exp, selected) if r not in free], exp.jobs, env)
        if exp.derived["supervised_tasks"]:
            stage_glue(exp, env)
            _run_supervised(exp, env, selected)
        stage_evaluate(exp, selected)
        if exp.derived["supervised_tasks"]:
            stage_evaluate_supervised(exp)
    write_report(exp, selected)
    cli.log(f"done in {time.time() - start:.0f}s; report: {exp.out / 'results.md'}")


def _run_supervised_only(exp, env, report_only, selected):
    if not report_only:
        stage_glue(exp, env)
        _run_supervised(exp, env, selected)
        stage_evaluate_supervised(exp)
    write_supervised_report(exp, selected)


def _run_supervised(exp, env, selected):
    """Stage 5's runs. Each equal-examples continuation follows its k = 0 run in the same
    job: together they take about as long as a k = 1 run (two mini-batches an update), so
    no core waits for the slowest run before the continuations start."""
    steps = []
    for seed in all_seeds(exp):
        steps += [[supervised_cmd(exp, seed, 0, selected), supervised_equal_examples_cmd(exp, seed, selected)],
                  supervised_cmd(exp, seed, 1, selected)]
    run_parallel(steps, exp.jobs, env)
