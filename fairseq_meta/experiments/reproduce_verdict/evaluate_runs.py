"""Stage 6: which checkpoints are evaluated, under which labels, and the calls of
:func:`fairseq_meta.evaluation.evaluate` on them."""
from pathlib import Path

from .. import experiment
from .runs import (
    SUPERVISED_RUNS, after_selection_runs, all_seeds, describe, max_positions, meta_steps, nsp_runs, run_name,
    supervised_run_dir, sweep_runs, vocabulary_files,
)
from .settings import cli

INIT_LABEL = "init"  # the imported model itself (--init-from)


def checkpoints_to_evaluate(exp, selected):
    """[(label, run name, updates, k, description, seed)], one per checkpoint file."""
    s = exp.settings
    u = s["updates"]
    rows = []
    k = meta_steps(selected)  # the label says "the selected setting"; k is 2 for Reptile
    for seed in all_seeds(exp):
        rows.append((f"s{seed}-k0", run_name(seed, 0), u, 0, "k = 0", seed))
        rows.append((f"s{seed}-k0-2U", run_name(seed, 0), 2 * u, 0, "k = 0 at 2U", seed))
        rows.append((f"s{seed}-k1", run_name(seed, k, selected), u, k, describe(k, selected), seed))
    extra = [r for r in after_selection_runs(exp, selected) if r[0] == s["sweep_seed"]]
    for run in sweep_runs(exp)[1:] + extra:
        seed, k, setting, order = run
        if k == meta_steps(selected) and order == "first" and setting["name"] == selected["name"]:
            continue  # evaluated as s{seed}-k1
        name = run_name(*run)
        rows.append((name, name, u, k, describe(k, setting, order), seed))
    return rows


def nsp_checkpoints_to_evaluate(exp, selected):
    """The MLM + NSP rows, as :func:`checkpoints_to_evaluate`: ``s{seed}-k0-nsp`` (U),
    ``s{seed}-k0-nsp-2U`` and ``s{seed}-k1-nsp`` (the selected setting at U)."""
    u, rows = exp.settings["updates"], []
    for seed, k, setting, order, objective in nsp_runs(exp, selected):
        name = run_name(seed, k, setting, order, objective)
        if k == 0:
            rows.append((f"s{seed}-k0-nsp", name, u, 0, describe(0, objective="nsp"), seed))
            rows.append((f"s{seed}-k0-nsp-2U", name, 2 * u, 0, "k = 0 at 2U, MLM + NSP", seed))
        else:
            rows.append((f"s{seed}-k1-nsp", name, u, k, describe(k, setting, order, objective), seed))
    return rows


def supervised_checkpoints(exp):
    """[(label, path)]: ``s{seed}-sup-k{k}`` for every seed, k = 0 and the selected k = 1
    (equal updates), then ``s{seed}-sup-k0-2U`` (k = 0 at equal examples), and with
    --init-from the imported model (``init``, where both phases started)."""
    if not exp.derived["supervised_tasks"]:
        return []
    seeds = all_seeds(exp)
    equal_updates, equal_examples = SUPERVISED_RUNS[:2], SUPERVISED_RUNS[2:]
    # the equal-updates pairs first: the main comparison is whole before the control starts
    runs = [(seed, run) for seed in seeds for run in equal_updates] + [
        (seed, run) for run in equal_examples for seed in seeds]
    items = [(f"s{seed}-sup-{run}", supervised_run_dir(exp, seed, run) / "checkpoints" / "checkpoint_last.pt")
             for seed, run in runs]
    if exp.derived.get("init"):
        items.append((INIT_LABEL, exp.derived["init"]["model"]))
    return items


def stage_evaluate_supervised(exp):
    """Fine-tuning and/or few-shot (:func:`measurements`) of the supervised checkpoints
    on the held-out tasks -> OUT/eval-supervised."""
    from ...evaluation import evaluate

    items = [f"{label}={path}" for label, path in supervised_checkpoints(exp)]
    dict_path, tokenizer = vocabulary_files(exp)
    settings = glue_settings(exp, items, "eval-supervised", measurements(exp), exp.derived["heldout_tasks"],
                             dict_path=str(dict_path), tokenizer=str(tokenizer))
    cli.log(f"evaluate: {len(items)} supervised checkpoints on the held-out "
            f"{', '.join(exp.derived['heldout_tasks'])} ({describe_measurements(exp)}) -> "
            f"{exp.out / 'eval-supervised'}")
    evaluate(settings, log=cli.log)


def glue_settings(exp, checkpoints, out_name, measured, tasks, **extra):
    """evaluate's Settings for fine-tuning, few-shot and/or the probe of ``checkpoints`` on GLUE
    ``tasks`` -> OUT/``out_name``; ``extra`` (the dictionary and tokenizer) is passed on."""
    from ...evaluation import Settings

    s = exp.settings
    return Settings(
        checkpoints=checkpoints, out_dir=str(exp.out / out_name), measurements=measured,
        glue_dir=str(Path(exp.data_root) / "glue"), tasks=tasks, glue_max_rows=s["glue_max_rows"] or None,
        ft_seeds=max(1, s["ft_seeds"]), ft_epochs=s["ft_epochs"], ft_lr=s["ft_lr"],
        ft_max_train=s["ft_max_train"], fs_sizes=exp.derived["fs_size_list"], fs_draws=s["fs_draws"],
        probe_max_train=s["probe_max_train"] or None, jobs=exp.jobs, device=s["device"], **extra)


def glue_checkpoints(exp, selected):
    """[(label, path)] that ``--ft-tasks`` scores on GLUE: the rows ``s{seed}-k0`` and
    ``s{seed}-k1`` of :func:`checkpoints_to_evaluate` (the equal-updates pairs) and, with
    --init-from, the imported model. A GLUE-5 few-shot checkpoint costs about 850 s of
    one core for MiniLM, so the equal-tokens and sweep rows are judged on the adaptation
    headline and validation loss only."""
    if not exp.derived.get("ft_tasks"):
        return []
    pairs = {f"s{seed}-k{k}" for seed in all_seeds(exp) for k in (0, 1)}
    items = [(label, experiment.checkpoint_file(exp.out / "pretrain" / name / "checkpoints", updates))
             for label, name, updates, *_ in checkpoints_to_evaluate(exp, selected) if label in pairs]
    if exp.derived.get("init"):
        items.append((INIT_LABEL, exp.derived["init"]["model"]))
    return items


def measurements(exp):
    """evaluate's GLUE measurements that the settings ask for: ``finetune`` unless
    --ft-seeds 0, ``fewshot`` with --fs-sizes, ``probe`` with --probe-max-train."""
    return (["finetune"] if exp.settings["ft_seeds"] else []) + (
        ["fewshot"] if exp.derived["fs_size_list"] else []) + (
        ["probe"] if exp.settings["probe_max_train"] else [])


def describe_measurements(exp):
    s = exp.settings
    said = {"finetune": f"fine-tuning x {s['ft_seeds']} seeds",
            "fewshot": f"few-shot n = {','.join(map(str, exp.derived['fs_size_list']))} x {s['fs_draws']} draws",
            "probe": f"probe on at most {s['probe_max_train']} training examples"}
    return ", ".join(said[m] for m in measurements(exp))


def glue_measurements(exp):
    """The GLUE measurements of the pre-training checkpoints: none without --ft-tasks."""
    return measurements(exp) if exp.derived.get("ft_tasks") else []


def adaptation_block_tokens(exp):
    """The adaptation headline's block length: the blocks the runs were pre-trained on
    (--tokens-per-sample, <s> included). None where that is evaluate's default, max
    positions - 1. With --init-from the positions are the import's (512 for MiniLM),
    and the 32-token runs of docs/results.md start 0.7-2.2 bits higher on WikiText-2's
    511-token blocks than on its 31-token ones: lengths they were never trained on."""
    block = exp.settings["tokens_per_sample"] - 1
    return None if block == max_positions(exp) - 1 else block


def stage_evaluate(exp, selected):
    """Adaptation of every pre-training checkpoint (and the imported model) -> OUT/eval;
    with --ft-tasks, GLUE fine-tuning and/or few-shot of :func:`glue_checkpoints` ->
    OUT/eval-glue."""
    from ...evaluation import Settings, evaluate

    s = exp.settings
    items = []
    for label, name, updates, _, _, _ in (checkpoints_to_evaluate(exp, selected)
                                          + nsp_checkpoints_to_evaluate(exp, selected)):
        path = experiment.checkpoint_file(exp.out / "pretrain" / name / "checkpoints", updates)
        items.append(f"{label}={path}")
    if exp.derived.get("init"):
        items.append(f"{INIT_LABEL}={exp.derived['init']['model']}")  # where every run started
    settings = Settings(
        checkpoints=items, out_dir=str(exp.out / "eval"), measurements=["adaptation"],
        domain_train=str(exp.derived["domain"]["valid"]), domain_eval=str(exp.derived["domain"]["test"]),
        ad_steps=exp.derived["ad_step_list"], ad_seeds=s["ad_seeds"], ad_lr=s["ad_lr"],
        ad_batch_size=s["ad_batch_size"], ad_eval_blocks=s["ad_eval_blocks"],
        ad_block_tokens=adaptation_block_tokens(exp), jobs=exp.jobs, device=s["device"])
    cli.log(f"evaluate: {len(items)} checkpoints x {s['ad_seeds']} adaptation seeds -> {exp.out / 'eval'}")
    evaluate(settings, log=cli.log)
    if not glue_measurements(exp):
        return
    ft_tasks, glue = exp.derived["ft_tasks"], glue_checkpoints(exp, selected)
    settings = glue_settings(exp, [f"{label}={path}" for label, path in glue], "eval-glue",
                             glue_measurements(exp), ft_tasks)
    cli.log(f"evaluate: {len(glue)} checkpoints on {', '.join(ft_tasks)} ({describe_measurements(exp)}) "
            f"-> {exp.out / 'eval-glue'}")
    evaluate(settings, log=cli.log)
