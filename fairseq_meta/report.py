"""The report of the experiment (:mod:`fairseq_meta.experiment`), from the files its
runs leave: OUT/results.md, OUT/results.json, OUT/pretrain_loss.png and
OUT/downstream.png — pre-training curves against exact token counts, GLUE dev
scores (mean ± std over seeds), their average, and paired (same fine-tuning seed)
differences to k = 0. A checkpoint whose fine-tuning has not finished is listed,
not scored. Reads only; runs nothing.
"""
import json
import statistics
from pathlib import Path

from . import glue
from .cli import Cli
from .errors import MetaConfigError
from .experiment import (GLUE_TASKS, OBJECTIVES, SUPERVISED_TASKS, checkpoints_to_finetune,
                         pretrain_runs, public_settings)

cli = Cli("reproduce.py")


def score_metrics(task):
    """The metrics a task's GLUE score averages, as the table headers name them."""
    return "/".join(glue.GLUE_TASKS[task].score_metrics)


def read_fairseq_log(path):
    """{'train': [json rows of train_inner], 'valid': [json rows of valid]}."""
    return parse_fairseq_log(Path(path).read_text(errors="replace").splitlines())


def parse_fairseq_log(lines):
    """:func:`read_fairseq_log` of log lines already read."""
    rows = {"train": [], "valid": []}
    for line in lines:
        for kind, tag in (("train", "| train_inner | "), ("valid", "| valid | ")):
            if tag in line:
                try:
                    rows[kind].append(json.loads(line.split(tag, 1)[1]))
                except ValueError:
                    pass
    return rows


def pretrain_curves(out, s):
    """Per run: tokens processed and losses (bits) along training.

    Every ``train_inner`` row carries ``episode_tokens``, the exact number of tokens
    (meta-train and meta-test mini-batches) that the updates since the previous row
    processed, summed by fairseq's metrics. Tokens processed at a logged update is
    the sum of the rows up to it. Validation and checkpoints fall on logged updates
    (``--validate-interval-updates`` and ``--updates`` are multiples of
    ``--log-interval``), so every point is an exact count.
    """
    curves = {}
    for name, objective, k, _ in pretrain_runs(s):
        log_path = out / "pretrain" / name / "train.log"
        rows = read_fairseq_log(log_path)
        train, tokens, last_update, tokens_at = [], 0, 0, {0: 0}
        for r in rows["train"]:
            update = int(r["num_updates"])
            if update <= last_update:  # a resumed run repeats updates: keep the first pass
                continue
            if "episode_tokens" not in r:
                raise MetaConfigError(f"{log_path}: a train_inner row has no episode_tokens (a log "
                                 "from an older fairseq_meta); rerun this step")
            tokens += int(r["episode_tokens"])
            last_update = update
            tokens_at[update] = tokens
            train.append({"updates": update, "tokens": tokens, "meta_test_loss": float(r["loss"]),
                          "mlm_loss": float(r.get("mlm_loss", r["loss"]))})
        valid = {}
        for r in rows["valid"]:  # a resumed run may log an update twice: keep the last
            valid[int(r["valid_num_updates"])] = (float(r["valid_loss"]),
                                                  float(r.get("valid_mlm_loss", r["valid_loss"])))
        curves[name] = {
            "objective": objective, "k": k, "train": train,
            "valid": [{"updates": u, "tokens": tokens_at[u], "loss": l, "mlm_loss": m}
                      for u, (l, m) in sorted(valid.items()) if u in tokens_at],
        }
    return curves


def downstream_scores(out, s):
    """{label: {task: {seed: score}}} from every finished finetune_glue results.json
    (a checkpoint whose fine-tuning has not finished is left out)."""
    scores = {}
    for label, _, _, _ in checkpoints_to_finetune(out, s):
        path = out / "finetune" / label / "results.json"
        if not (out / "finetune" / label / ".done").exists():  # results.json grows per task
            continue
        result = json.loads(path.read_text())
        scores[label] = {}
        for task in GLUE_TASKS:
            split = result["tasks"][task]["splits"]["valid"]
            scores[label][task] = {int(seed): glue.task_score(task, metrics)
                                   for seed, metrics in split["seeds"].items()}
    return scores


def mean_std(values):
    values = list(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def average_over_tasks(per_task, tasks):
    """{seed: mean over tasks} for seeds every task has."""
    seeds = set.intersection(*(set(per_task[t]) for t in tasks))
    return {seed: statistics.fmean(per_task[t][seed] for t in tasks) for seed in sorted(seeds)}


def comparisons(s):
    """[(title, label, baseline label, tasks)]: what is compared with what."""
    n, rows = s["updates"], []
    for objective in OBJECTIVES:
        for k in range(1, s["max_k"] + 1):
            rows.append((f"{objective}: k={k} vs k=0, equal updates ({n})",
                         f"{objective}-k{k}", f"{objective}-k0", GLUE_TASKS))
            rows.append((f"{objective}: k={k} vs k=0, equal tokens ({(k + 1) * n} k=0 updates)",
                         f"{objective}-k{k}", f"{objective}-k0@{(k + 1) * n}", GLUE_TASKS))
    held_out = [t for t in GLUE_TASKS if t not in SUPERVISED_TASKS]
    rows.append(("supervised: k=1 vs k=0, held-out tasks (" + ", ".join(held_out) + ")",
                 "supervised-k1", "supervised-k0", held_out))
    rows.append(("supervised: k=1 vs k=0, all tasks", "supervised-k1", "supervised-k0", GLUE_TASKS))
    return rows


def paired_differences(scores, s):
    """Per comparison and task: mean ± std over seeds of (score - baseline score), same seed."""
    result = []
    for title, label, base, tasks in comparisons(s):
        if label not in scores or base not in scores:
            continue
        per_task = {}
        for task in tasks:
            seeds = sorted(set(scores[label][task]) & set(scores[base][task]))
            diffs = [scores[label][task][sd] - scores[base][task][sd] for sd in seeds]
            mean, std = mean_std(diffs)
            per_task[task] = {"mean": mean, "std": std, "n": len(diffs),
                              "wins": sum(d > 0 for d in diffs)}
        avg_label = average_over_tasks(scores[label], tasks)
        avg_base = average_over_tasks(scores[base], tasks)
        diffs = [avg_label[sd] - avg_base[sd] for sd in sorted(set(avg_label) & set(avg_base))]
        mean, std = mean_std(diffs)
        result.append({"title": title, "label": label, "baseline": base, "tasks": tasks,
                       "per_task": per_task, "average": {"mean": mean, "std": std,
                                                         "n": len(diffs),
                                                         "wins": sum(d > 0 for d in diffs)}})
    return result


def plot(curves, scores, out, s):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {0: "tab:blue", 1: "tab:orange", 2: "tab:green", 3: "tab:red"}
    fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(6 * len(OBJECTIVES), 4.2), squeeze=False)
    for ax, objective in zip(axes[0], OBJECTIVES):
        for name, c in curves.items():
            if c["objective"] != objective:
                continue
            color = colors.get(c["k"], None)
            if c["train"]:
                ax.plot([p["tokens"] / 1e6 for p in c["train"]],
                        [p["meta_test_loss"] for p in c["train"]], color=color, alpha=0.35,
                        linewidth=0.8)
            if c["valid"]:
                ax.plot([p["tokens"] / 1e6 for p in c["valid"]], [p["loss"] for p in c["valid"]],
                        color=color, marker="o", markersize=3, label=f"k={c['k']} valid")
        ax.set_title(f"pre-training, {objective}: faint = meta-test loss, "
                     "dots = valid loss", fontsize=9)
        ax.set_xlabel("tokens processed, all mini-batches (millions)")
        ax.set_ylabel("loss (bits)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pretrain_loss.png", dpi=110)
    plt.close(fig)

    labels = list(scores)
    panels = GLUE_TASKS + ["average"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, task in zip(axes.flat, panels):
        means, stds = [], []
        for label in labels:
            per_seed = (average_over_tasks(scores[label], GLUE_TASKS) if task == "average"
                        else scores[label][task])
            m, sd = mean_std(per_seed.values())
            means.append(m)
            stds.append(sd)
        for i, (label, m, sd) in enumerate(zip(labels, means, stds)):
            # points, not bars: the differences are small next to the scores
            ax.errorbar([i], [m], yerr=[sd], fmt="o", capsize=3,
                        color=colors.get(int(label.split("-k")[1][0]), "gray"))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        metric = "GLUE score" if task == "average" else score_metrics(task)
        ax.set_title(f"{task} ({metric}, dev)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("GLUE dev after fine-tuning, mean ± std over seeds; blue k=0, orange k=1, "
                 "green k=2", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "downstream.png", dpi=110)
    plt.close(fig)


def fmt(mean, std):
    return f"{mean:.2f} ± {std:.2f}"


def write_report(exp):
    s, out = exp.settings, exp.out
    curves = pretrain_curves(out, s)
    scores = downstream_scores(out, s)
    if not scores:
        raise MetaConfigError(f"no fine-tuning has finished in {out / 'finetune'} yet")
    missing = [label for label, _, _, _ in checkpoints_to_finetune(out, s) if label not in scores]
    diffs = paired_differences(scores, s)
    plot(curves, scores, out, s)

    lines = ["# Meta-pretraining reproduction", "",
             f"Mode: {'quick' if exp.quick else 'full'}; settings: `{json.dumps(public_settings(s))}`",
             "", "## Pre-training", "",
             "| run | objective | k | updates | tokens processed | final valid loss (bits) "
             "| final valid MLM loss | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for name, c in curves.items():
        last = c["valid"][-1] if c["valid"] else None
        done = out / "pretrain" / name / ".done"
        wall = json.loads(done.read_text())["seconds"] if done.exists() else float("nan")
        updates = last["updates"] if last else 0
        lines.append(f"| {name} | {c['objective']} | {c['k']} | {updates} | "
                     f"{last['tokens'] if last else 0:,.0f} | "
                     f"{last['loss'] if last else float('nan'):.3f} | "
                     f"{last['mlm_loss'] if last else float('nan'):.3f} | {wall:.0f} |")
    lines += ["", "Valid loss of the k = 0 runs at the updates where k > 0 runs stop "
              "(equal-token points):", ""]
    for name, c in curves.items():
        if c["k"] == 0:
            points = ", ".join(f"{p['updates']}: {p['loss']:.3f}" for p in c["valid"]
                               if p["updates"] % s["updates"] == 0)
            lines.append(f"- {name}: {points}")

    lines += ["", "## Fine-tuning (GLUE dev, metric x 100, mean ± std over seeds "
              f"{s['seeds']})", "",
              "| checkpoint | " + " | ".join(f"{t} ({score_metrics(t)})" for t in GLUE_TASKS)
              + " | average |", "|---" * (len(GLUE_TASKS) + 2) + "|"]
    described = {label: desc for label, _, _, desc in checkpoints_to_finetune(out, s)}
    for label, per_task in scores.items():
        cells = [fmt(*mean_std(per_task[t].values())) for t in GLUE_TASKS]
        cells.append(fmt(*mean_std(average_over_tasks(per_task, GLUE_TASKS).values())))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if missing:
        lines += ["", f"**Not fine-tuned yet (left out of this report):** {', '.join(missing)}."]
    lines += ["", "Checkpoints: " + "; ".join(f"`{k}` = {v}" for k, v in described.items()), "",
              "## Paired differences to k = 0 (same fine-tuning seed)", "",
              "mean ± std over seeds of (score - baseline score); wins = seeds where k > 0 is "
              "higher.", "",
              "| comparison | " + " | ".join(GLUE_TASKS) + " | average |",
              "|---" * (len(GLUE_TASKS) + 2) + "|"]
    for d in diffs:
        cells = []
        for task in GLUE_TASKS:
            t = d["per_task"].get(task)
            cells.append(f"{t['mean']:+.2f} ± {t['std']:.2f} ({t['wins']}/{t['n']})" if t else "—")
        a = d["average"]
        cells.append(f"**{a['mean']:+.2f} ± {a['std']:.2f}** ({a['wins']}/{a['n']})")
        lines.append(f"| {d['title']} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: `pretrain_loss.png`, `downstream.png`.", ""]
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(
        {"mode": "quick" if exp.quick else "full", "settings": public_settings(s),
         "not_fine_tuned": missing,
         "pretrain": curves, "scores": {l: {t: {str(sd): v for sd, v in per.items()}
                                              for t, per in ts.items()}
                                         for l, ts in scores.items()},
         "paired_differences": diffs}, indent=1) + "\n")
    cli.log(f"report: {out / 'results.md'}, {out / 'pretrain_loss.png'}, {out / 'downstream.png'}")
