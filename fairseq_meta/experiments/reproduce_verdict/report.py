"""Stage 7: the report (reads only): OUT/results.json, results.md and two plots."""
import json

from ...errors import MetaConfigError
from .evaluate_runs import (
    INIT_LABEL, checkpoints_to_evaluate, glue_measurements, measurements, nsp_checkpoints_to_evaluate,
)
from .runs import SUPERVISED_RUNS, all_seeds, run_name, supervised_run_dir
from .settings import SUMMARY_WINDOW
from .sweep import read_run_log

def tokens_at(train_rows):
    """{update: tokens processed up to it}, summed from ``episode_tokens`` (the count
    of every meta-train and meta-test mini-batch since the previous row). fairseq prints
    numbers with 6 significant digits ("1.2288e+06"): the count is exact below a million
    tokens per log row, to 6 digits above."""
    out, tokens = {0: 0}, 0
    for update in sorted(train_rows):
        tokens += round(float(train_rows[update].get("episode_tokens", 0)))
        out[update] = tokens
    return out


def _mean_of(rows, key):
    values = [float(r[key]) for r in rows if key in r]
    return sum(values) / len(values) if values else None


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def sweep_rows(exp, selected, raw, column):
    """The sweep table (sweep seed): one row per setting, k = 0 first."""
    from ...evaluation import stats

    s = exp.settings
    u, seed = s["updates"], s["sweep_seed"]
    base = f"s{seed}-k0"
    entries = [(base, run_name(seed, 0), 0, "k = 0")]
    for label, name, _, k, text, row_seed in checkpoints_to_evaluate(exp, selected):
        if row_seed == seed and k > 0:
            entries.append((label, name, k, text))
    rows = []
    for label, name, k, text in entries:
        train, valid = read_run_log(exp.out / "pretrain" / name / "train.log")
        window = [r for upd, r in train.items() if u * (1 - SUMMARY_WINDOW) < upd <= u]
        at_u = valid.get(u, {})
        row = {"label": label, "run": name, "setting": text, "k": k, "updates": u,
               "selected": label == f"s{seed}-k1",
               "adaptation_gain": _mean_of(window, "adaptation_gain"),
               "inner_move": _mean_of(window, "inner_move"),
               "outer_move": _mean_of(window, "outer_move"),
               "support_loss": _mean_of(window, "meta_train_loss") if k else None,
               "valid_loss": float(at_u["valid_loss"]) if "valid_loss" in at_u else None,
               "valid_adapted_loss": (float(at_u["valid_adapted_loss"])
                                      if "valid_adapted_loss" in at_u else None)}
        for col in ("t=0", column):
            per_seed = raw.get(label, {}).get(col, {})
            row[col] = stats.summary(list(per_seed.values()))
        if label != base and label in raw and base in raw:
            row["vs_k0"] = stats.paired(raw[label][column], raw[base][column])
        else:
            row["vs_k0"] = None
        rows.append(row)
    return rows


def verdict_comparisons(exp, raw, column, valid_scores):
    """{name: verdict.compare(...)}: equal updates over every seed and over the fresh
    seeds only, equal tokens over every seed; the headline, t = 0 and valid at θ."""
    from ...evaluation import verdict

    s = exp.settings
    u = s["updates"]
    every_seed = [str(x) for x in all_seeds(exp)]
    fresh = [str(x) for x in exp.derived["fresh_seeds"]]
    measures = [(f"headline {column}", verdict.checkpoint_scores(raw, column)),
                ("headline t=0", verdict.checkpoint_scores(raw, "t=0")),
                ("valid at θ", valid_scores)]
    out = {}
    for measure, scores in measures:
        out[f"{measure}: equal updates ({u}), seeds {','.join(every_seed)}"] = verdict.compare(
            scores, "s{seed}-k1", "s{seed}-k0", every_seed)
        out[f"{measure}: equal updates ({u}), fresh seeds {','.join(fresh)}"] = verdict.compare(
            scores, "s{seed}-k1", "s{seed}-k0", fresh)
        out[f"{measure}: equal tokens (k = 0 at {2 * u}), seeds {','.join(every_seed)}"] = verdict.compare(
            scores, "s{seed}-k1", "s{seed}-k0-2U", every_seed)
    return out


def nsp_comparisons(exp, raw, column, valid):
    """MLM + NSP, k = 1 (selected) − k = 0 paired by pre-training seed, at equal updates
    and equal tokens: ({name: compare} in bits, {name: compare} in accuracy points).
    ``valid``: {label: valid record at its update}."""
    from ...evaluation import verdict

    u = exp.settings["updates"]
    seeds = [str(x) for x in all_seeds(exp)]
    valid_mlm = {l: float(r["valid_mlm_loss"]) for l, r in valid.items() if "valid_mlm_loss" in r}
    valid_nsp = {l: float(r["valid_nsp_accuracy"]) for l, r in valid.items() if "valid_nsp_accuracy" in r}
    tables = ({}, {})
    for table, measure, scores in ((0, f"headline {column}", verdict.checkpoint_scores(raw, column)),
                                   (0, "valid MLM at θ", valid_mlm),
                                   (1, "valid NSP accuracy at θ", valid_nsp)):
        for when, baseline in ((f"equal updates ({u})", "s{seed}-k0-nsp"),
                               (f"equal tokens (k = 0 at {2 * u})", "s{seed}-k0-nsp-2U")):
            tables[table][f"MLM + NSP, {measure}: {when}, seeds {','.join(seeds)}"] = verdict.compare(
                scores, "s{seed}-k1-nsp", baseline, seeds)
    return tables


def measurement_names(exp, chosen):
    """The verdict.load_raw names of evaluate's GLUE measurements ``chosen``: finetune, fewshot-N, probe."""
    names = []
    for m in chosen:
        names += [f"fewshot-{n}" for n in exp.derived["fs_size_list"]] if m == "fewshot" else [m]
    return names


def _columns(tasks):
    return tasks + (["average"] if len(tasks) > 1 else [])


def _glue_tables(path, names, columns, seeds, label, key):
    """(comparisons, scores) of the GLUE measurements ``names`` of ``path`` (an evaluate
    results.json): per measurement and column, ``label(seed, "k1")`` − ``label(seed, "k0")``
    paired by pre-training seed ({key(name, column): compare}), and
    {name: {column: {"k0", "k1"[, "init"]: mean score over seeds}}}."""
    from ...evaluation import stats, verdict

    if not path.is_file():
        raise MetaConfigError(f"{path} not found: the GLUE evaluation has not run yet")
    comparisons, scores = {}, {}
    for name in names:
        raw = verdict.load_raw([path], name)
        for col in columns:
            per_label = verdict.checkpoint_scores(raw, col)
            comparisons[key(name, col)] = verdict.compare(
                per_label, label("{seed}", "k1"), label("{seed}", "k0"), seeds)
            row = {k: stats.summary([per_label[label(x, k)] for x in seeds])["mean"] for k in ("k0", "k1")}
            if INIT_LABEL in per_label:
                row["init"] = per_label[INIT_LABEL]
            scores.setdefault(name, {})[col] = row
    return comparisons, scores


def supervised_comparisons(exp):
    """(comparisons, scores): the supervised phase with the selected k = 1 − with k = 0,
    paired by pre-training seed, on each held-out task and their average (points), per
    measurement (fine-tuning, few-shot at each n), as :func:`_glue_tables`: at equal
    updates, and at equal examples against k = 0 continued to 2U (``k0-2U`` in scores)."""
    def key(when):
        def named(name, col):
            how = {"finetune": "fine-tuned on", "probe": "probed on"}.get(name) or f"few-shot n = {name.split('-')[1]} on"
            return f"supervised{when}, {how} {col}: seeds {','.join(seeds)}"
        return named

    seeds = [str(x) for x in all_seeds(exp)]
    results = exp.out / "eval-supervised" / "results.json"
    names, columns = measurement_names(exp, measurements(exp)), _columns(exp.derived["heldout_tasks"])
    comparisons, scores = _glue_tables(results, names, columns, seeds, lambda seed, k: f"s{seed}-sup-{k}", key(""))
    examples, examples_scores = _glue_tables(
        results, names, columns, seeds, lambda seed, k: f"s{seed}-sup-{'k0-2U' if k == 'k0' else k}",
        key(" at equal examples (k = 0 at 2U)"))
    for name, cols in examples_scores.items():
        for col, row in cols.items():
            scores[name][col]["k0-2U"] = row["k0"]
    return {**comparisons, **examples}, scores


def supervised_training(exp):
    """{s{seed}-sup-{run}: {update, valid_<task>_accuracy and _mcc (or _pearson) ...}}: the
    last validation of each supervised run (k0, k1, k0-2U) on its own tasks' dev sets (do
    both learn them?)."""
    out = {}
    for seed in all_seeds(exp):
        for run in SUPERVISED_RUNS:
            log = supervised_run_dir(exp, seed, run) / "train.log"
            if run == "k0-2U" and not log.is_file():
                # an OUT from before the equal-examples runs existed
                raise MetaConfigError(f"no training log {log}: run the same command without --report-only "
                                      f"to add the equal-examples runs (k = 0 at 2U)")
            valid = read_run_log(log)[1]
            if not valid:
                raise MetaConfigError(f"supervised run s{seed}-{run} logged no validation")
            update = max(valid)
            row = {key: float(v) for key, v in valid[update].items()
                   if key.startswith("valid_") and key.endswith(("_accuracy", "_mcc", "_pearson"))}
            out[f"s{seed}-sup-{run}"] = {"update": update, **row}
    return out


def supervised_own_task_comparisons(exp, valid):
    """{name: verdict.compare}: k = 1 − k = 0 on each own-task dev metric of
    :func:`supervised_training` (accuracy, MCC, Pearson's r; points), paired by seed, at
    equal updates and at equal examples (k = 0 at 2U)."""
    from ...evaluation import verdict

    seeds = [str(x) for x in all_seeds(exp)]
    metrics = sorted({key for row in valid.values() for key in row if key != "update"})
    out = {}
    for metric in metrics:
        per_label = {label: row[metric] for label, row in valid.items() if metric in row}
        for when, baseline in (("equal updates", "s{seed}-sup-k0"), ("equal examples", "s{seed}-sup-k0-2U")):
            out[f"own task, {metric}: {when}, seeds {','.join(seeds)}"] = verdict.compare(
                per_label, "s{seed}-sup-k1", baseline, seeds)
    return out


def glue_comparisons(exp):
    """(comparisons, scores) of the GLUE measurements of OUT/eval-glue: the selected
    k = 1 − k = 0 at equal updates, as :func:`_glue_tables`. Empty without --ft-tasks."""
    names = measurement_names(exp, glue_measurements(exp))
    if not names:
        return {}, {}
    seeds = [str(x) for x in all_seeds(exp)]
    when = f"equal updates ({exp.settings['updates']}), seeds {','.join(seeds)}"
    return _glue_tables(exp.out / "eval-glue" / "results.json", names, _columns(exp.derived["ft_tasks"]),
                        seeds, lambda seed, k: f"s{seed}-{k}", lambda name, col: f"{name}, {col}: {when}")


def _describe_glue(exp):
    """How the GLUE measurements were run, for the report's text."""
    s, parts = exp.settings, []
    for m in measurements(exp):
        if m == "finetune":
            parts.append(f"`finetune`: {s['ft_seeds']} seed(s), {s['ft_epochs']} epochs, at most "
                         f"{s['ft_max_train']} examples")
        elif m == "probe":
            parts.append(f"`probe`: frozen features, at most {s['probe_max_train']} training examples "
                         "per task, deterministic (one score per checkpoint)")
        else:
            parts.append(f"`fewshot-N`: N = {', '.join(map(str, exp.derived['fs_size_list']))} examples "
                         f"per task, {s['fs_draws']} draws")
    return "; ".join(parts)


def _score_table(scores, has_init):
    """Mean scores per measurement and column: k = 0, k = 1, k = 0 at 2U where the
    scores have it (the supervised phase), the imported model with ``has_init``."""
    extra = any("k0-2U" in row for cols in scores.values() for row in cols.values())
    keys = ["k0", "k1"] + (["k0-2U"] if extra else []) + (["init"] if has_init else [])
    heads = {"k0": "k = 0", "k1": "k = 1", "k0-2U": "k = 0 at 2U", "init": "init"}
    lines = ["| measurement | column | " + " | ".join(heads[k] for k in keys) + " |",
             "|---|---|" + "---:|" * len(keys)]
    for name, cols in scores.items():
        for col, row in cols.items():
            lines.append(f"| {name} | {col} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    return lines


def plot_headline_vs_tokens(path, points, column):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (seed, p) in enumerate(sorted(points.items())):
        color = f"C{i}"
        ax.plot([p["k0"][0][0], p["k0"][1][0]], [p["k0"][0][1], p["k0"][1][1]], "o-", color=color,
                label=f"seed {seed}: k = 0 (U, 2U)")
        ax.plot([p["k1"][0]], [p["k1"][1]], "s", color=color, markersize=9, markerfacecolor="none",
                label=f"seed {seed}: k = 1 (U)")
    ax.set_xlabel("tokens processed in pre-training")
    ax.set_ylabel(f"headline: adaptation {column} (bits, lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_adaptation_gain(path, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for text, (updates, gains) in curves.items():
        ax.plot(updates, gains, ".-", label=text)
    ax.set_xlabel("update")
    ax.set_ylabel("adaptation gain (bits)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(exp, selected):
    """OUT/results.json, results.md and the two plots from the logs, selection.json
    and OUT/eval/results.json."""
    from ...evaluation import verdict

    s, out = exp.settings, exp.out
    u = s["updates"]
    column = f"t={max(exp.derived['ad_step_list'])}"
    eval_json = out / "eval" / "results.json"
    if not eval_json.is_file():
        raise MetaConfigError(f"{eval_json} not found: the evaluation has not run yet")
    raw = verdict.load_raw([eval_json], "adaptation")
    selection = json.loads((out / "selection.json").read_text())
    evaluated = checkpoints_to_evaluate(exp, selected) + nsp_checkpoints_to_evaluate(exp, selected)
    missing = [label for label, *_ in evaluated if label not in raw]
    if missing:
        raise MetaConfigError(f"{eval_json} has no adaptation results for {', '.join(missing)}")
    logs = {name: read_run_log(out / "pretrain" / name / "train.log")
            for name in {name for _, name, *_ in evaluated}}
    valid_scores, valid_rows, tokens = {}, {}, {}
    for label, name, updates, _, _, _ in evaluated:
        train, valid = logs[name]
        valid_rows[label] = valid.get(updates, {})
        if "valid_loss" in valid_rows[label]:
            valid_scores[label] = float(valid_rows[label]["valid_loss"])
        tokens[label] = tokens_at(train).get(updates)
    sweep = sweep_rows(exp, selected, raw, column)
    comparisons = verdict_comparisons(exp, raw, column, valid_scores)
    nsp, nsp_accuracy = nsp_comparisons(exp, raw, column, valid_rows) if s["nsp"] else ({}, {})
    supervised, supervised_scores = supervised_comparisons(exp) if exp.derived["supervised_tasks"] else ({}, {})
    supervised_valid = supervised_training(exp) if exp.derived["supervised_tasks"] else {}
    own_task = supervised_own_task_comparisons(exp, supervised_valid) if supervised_valid else {}
    glue, glue_scores = glue_comparisons(exp)
    headline = verdict.checkpoint_scores(raw, column)
    result = {"settings": {"quick": exp.quick, **s}, "selection": selection,
              "headline_column": column, "sweep": sweep, "tokens": tokens,
              "valid_loss": valid_scores, "headline_scores": headline, "comparisons": comparisons,
              "nsp_comparisons": nsp, "nsp_accuracy_comparisons": nsp_accuracy,
              "supervised_comparisons": supervised, "supervised_scores": supervised_scores,
              "supervised_valid": supervised_valid, "supervised_own_task_comparisons": own_task,
              "glue_comparisons": glue, "glue_scores": glue_scores}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")

    points = {}
    for seed in all_seeds(exp):
        points[seed] = {"k0": [(tokens[f"s{seed}-k0"], headline[f"s{seed}-k0"]),
                               (tokens[f"s{seed}-k0-2U"], headline[f"s{seed}-k0-2U"])],
                        "k1": (tokens[f"s{seed}-k1"], headline[f"s{seed}-k1"])}
    plot_headline_vs_tokens(out / "verdict_headline_vs_tokens.png", points, column)
    curves = {}
    for row in sweep:
        if row["k"]:
            train = logs[row["run"]][0]
            pts = [(upd, float(r["adaptation_gain"])) for upd, r in sorted(train.items())
                   if "adaptation_gain" in r]
            curves[row["setting"]] = ([p[0] for p in pts], [p[1] for p in pts])
    plot_adaptation_gain(out / "sweep_adaptation_gain.png", curves)

    lines = [f"# Meta-pretraining verdict ({'quick' if exp.quick else 'full'} mode)", "",
             f"Written by scripts/reproduce_verdict.py; settings: {out / 'settings.json'}. "
             f"U = {u} updates; headline: masked-LM loss on WikiText-2 test after "
             f"{column[2:]} adaptation steps on WikiText-2 valid, {s['ad_seeds']} evaluation seeds.", "",
             f"## Sweep (pre-training seed {s['sweep_seed']})", "",
             f"Adaptation gain, inner move, outer move and support loss: means over the logged "
             f"updates in ({u * (1 - SUMMARY_WINDOW):g}, {u}]; valid at θ and adapted at update {u}; "
             f"headline mean ± sd over evaluation seeds; Δ: paired over evaluation seeds against "
             f"k = 0 (95% CI).", "",
             f"| setting | label | adaptation gain (bits) | inner move | outer move | support loss at θ "
             f"| valid at θ | valid adapted | headline t=0 | headline {column} | Δ {column} vs k = 0 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sweep:
        h = r[column]
        head = "—" if h["mean"] is None else f"{h['mean']:.3f} ± {_fmt(h['std'])}"
        d = r["vs_k0"]
        delta = "—" if d is None else (f"{verdict.fmt_signed(d['mean'])} [{verdict.fmt_signed(d['ci_low'])}, "
                                       f"{verdict.fmt_signed(d['ci_high'])}]")
        name = r["setting"] + (" (selected)" if r["selected"] else "")
        lines.append(f"| {name} | {r['label']} | {_fmt(r['adaptation_gain'], 4)} | {_fmt(r['inner_move'], 4)} "
                     f"| {_fmt(r['outer_move'], 4)} | {_fmt(r['support_loss'])} | {_fmt(r['valid_loss'])} "
                     f"| {_fmt(r['valid_adapted_loss'])} | {_fmt(r['t=0']['mean'])} | {head} | {delta} |")
    lines += ["", f"**Selection** ({selection['rule']}): {selection['selected']} at update "
              f"{selection['update']} (valid loss "
              + ", ".join(f"{n} {v:.3f}" for n, v in selection["valid_loss"].items()) + ").", "",
              "## Verdict: k = 1 (selected) against k = 0, paired by pre-training seed", "",
              "Treatment − baseline (lower is better for k = 1); 95% t-interval over pre-training "
              "seeds and the minimum detectable effect (paired, 80% power).", ""]
    lines += verdict.table(comparisons, "bits")
    if nsp:
        lines += ["", "## MLM + NSP: k = 1 (selected) against k = 0", "",
                  "The same verdict with `--sentence-objective nsp` for both (valid MLM: the MLM part "
                  "of the validation loss at θ). Equal tokens: k = 0 at 2U read as many sequences as "
                  "k = 1 at U; sentence pairs vary in length, so their token counts (results.json, "
                  "`tokens`) differ by a few per cent.", ""]
        lines += verdict.table(nsp, "bits") + ["", "NSP accuracy: higher is better.", ""]
        lines += verdict.table(nsp_accuracy, "points", "higher")
    has_init = bool(exp.derived.get("init"))
    init_note = " (init: the imported model itself)" if has_init else ""
    if glue:
        lines += ["", "## GLUE: k = 1 (selected) against k = 0 at equal updates", "",
                  f"The checkpoints at U scored on {', '.join(exp.derived['ft_tasks'])} "
                  f"(scripts/evaluate.py; {_describe_glue(exp)}), paired by pre-training seed; per-run "
                  "scores in eval-glue/results.md. Higher is better here.", ""]
        lines += verdict.table(glue, "points", "higher")
        lines += ["", f"Mean scores over pre-training seeds{init_note}:", ""] + _score_table(glue_scores, has_init)
    if supervised:
        lines += supervised_section(exp, supervised, supervised_scores, supervised_valid, own_task)
    lines += ["", "![headline against tokens](verdict_headline_vs_tokens.png)",
              "![adaptation gain per logged update](sweep_adaptation_gain.png)", ""]
    (out / "results.md").write_text("\n".join(lines))


def supervised_section(exp, supervised, scores, valid, own_task, treatment="k = 1 (selected)"):
    """The report's supervised lines: the held-out comparisons, the mean scores, each
    run's last validation on its own tasks and the paired differences there."""
    from ...evaluation import verdict

    s = exp.settings
    has_init = bool(exp.derived.get("init"))
    init_note = " (init: the imported model itself)" if has_init else ""
    sup = exp.derived["supervised_tasks"]
    start = "the imported model" if has_init else "s{seed}-k0 at U"
    lines = ["", f"## Supervised: meta_sentence_prediction with {treatment} against k = 0", "",
             f"`meta_sentence_prediction` on {', '.join(sup)} for {s['supervised_updates']} "
             f"updates from {start}, then scored (scripts/evaluate.py; {_describe_glue(exp)}) on the "
             f"held-out {', '.join(exp.derived['heldout_tasks'])}; per-run scores in "
             f"eval-supervised/results.md. Higher is better here. At equal examples: against k = 0 "
             f"continued to {2 * s['supervised_updates']} updates (`s{{seed}}-sup-k0-2U`), which has read "
             f"the mini-batches k = 1 reads in {s['supervised_updates']}.", ""]
    lines += verdict.table(supervised, "points", "higher")
    lines += ["", f"Mean scores over pre-training seeds{init_note}:", ""]
    lines += _score_table(scores, has_init)
    keys = sorted({key for row in valid.values() for key in row if key != "update"})
    lines += ["", "Each supervised run on its own tasks' dev sets at its last update:", "",
              "| run | update | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for label, row in valid.items():
        lines.append(f"| {label} | {row['update']} | "
                     + " | ".join(_fmt(row.get(key), 2) for key in keys) + " |")
    lines += ["", "k = 1 − k = 0 there (points):", ""] + verdict.table(own_task, "points", "higher")
    return lines


def write_supervised_report(exp, selected):
    """``--supervised-only``: OUT/results.json and results.md of the supervised phase
    alone (k = 0 against the given inner setting), from the run logs and
    OUT/eval-supervised/results.json."""
    from .runs import describe, meta_steps

    comparisons, scores = supervised_comparisons(exp)
    valid = supervised_training(exp)
    own_task = supervised_own_task_comparisons(exp, valid)
    treatment = describe(meta_steps(selected), selected)
    result = {"settings": {"quick": exp.quick, **exp.settings}, "supervised_only": True,
              "treatment": {"setting": selected, "description": treatment},
              "supervised_comparisons": comparisons, "supervised_scores": scores, "supervised_valid": valid,
              "supervised_own_task_comparisons": own_task}
    (exp.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# The supervised phase alone ({'quick' if exp.quick else 'full'} mode)", "",
             f"Written by scripts/reproduce_verdict.py --supervised-only; settings: "
             f"{exp.out / 'settings.json'}. k = 1 here is the given inner setting ({treatment}), "
             f"not a sweep's selection; no MLM run was made.", ""]
    lines += supervised_section(exp, comparisons, scores, valid, own_task, treatment)[1:]
    (exp.out / "results.md").write_text("\n".join(lines) + "\n")
