"""results.json, results.md and the plots of an evaluation (from the aggregated numbers only)."""
import json
import math
from pathlib import Path

from . import stats


def _f(x, digits=2):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _cell(s, digits=2):
    """mean ± std [95% CI] (n)."""
    if s is None or s.get("mean") is None:
        return "n/a"
    if s.get("std") is None:
        return f"{_f(s['mean'], digits)} (n={s['n']})"
    return f"{_f(s['mean'], digits)} ± {_f(s['std'], digits)} [{_f(s['ci_low'], digits)}, {_f(s['ci_high'], digits)}]"


def _diff(p, digits=2):
    if p is None or p.get("mean") is None:
        return "n/a"
    sep = "" if p.get("separation") is None else f", {p['separation']:+.1f} SE"
    need = ""
    if p.get("target") is not None and p.get("std") is not None:
        n = p.get("n_for_target")
        need = f" (≤ {p['target']:g} at n = {n})" if n is not None else f" (≤ {p['target']:g}: n > {stats.MAX_PAIRS})"
    return (f"{p['mean']:+.{digits}f} [{_f(p['ci_low'], digits)}, {_f(p['ci_high'], digits)}]"
            f"{sep}, MDE {_f(p['mde'], digits)}{need}")


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _json_safe(obj.tolist())
    return obj


def _seed_table(lines, block, labels, columns, digits=2, what="seeds"):
    lines.append("| checkpoint | " + " | ".join(columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for l in labels:
        row = block["summary"].get(l, {})
        lines.append(f"| {l} | " + " | ".join(_cell(row.get(c), digits) for c in columns) + " |")
    if block["paired_to_first"]:
        lines += ["", f"Paired differences to `{labels[0]}` (same {what}): mean [95% CI], "
                  "separation in standard errors, minimum detectable effect (paired t-test, "
                  f"95% confidence, 80% power) and, in brackets, how many {what} bring it down "
                  "to the target effect (--target-effect).", ""]
        lines.append("| checkpoint | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for l in labels[1:]:
            row = block["paired_to_first"].get(l, {})
            lines.append(f"| {l} − {labels[0]} | " + " | ".join(_diff(row.get(c), digits) for c in columns) + " |")
    lines.append("")


def write_report(out_dir, report):
    out_dir = Path(out_dir)
    report = _json_safe(report)
    (out_dir / "results.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    labels = [c["label"] for c in report["checkpoints"]]
    tasks = report["tasks"]
    m = report["measurements"]
    s = report["settings"]
    lines = ["# Evaluation of pre-trained checkpoints", "",
             "Every measurement starts from θ, the weights the checkpoint holds (for k > 0 "
             "the meta-learned initialisation, never an adapted θ_k); the only adaptation "
             "is the measurement's own (fine-tuning, or t steps on the new domain).", ""]
    if s["quick"]:
        lines += ["**Quick mode: smoke-test budgets, the numbers mean nothing.**", ""]
    lines += ["| checkpoint | updates | path | sha256 |", "|---|---:|---|---|"]
    for c in report["checkpoints"]:
        lines.append(f"| {c['label']} | {c['num_updates']} | `{c['path']}` | {c['sha256'][:12]} |")
    lines.append("")
    h = report.get("headline")
    if h and h["measurement"] in m:
        block = m[h["measurement"]]
        lines += [f"## Headline: {h['measurement']} at {h['column']} ({h['unit']})", ""]
        _seed_table(lines, block, labels, [h["column"]], 3)
    columns = tasks + ["average"]
    if "finetune" in m:
        lines += ["## 1. Fine-tuning", "",
                  f"fairseq's fine-tuning (configs/finetune), {s['ft_epochs']} epochs over at most "
                  f"{s['ft_max_train']} training examples, lr {s['ft_lr']}, batch {s['ft_batch_size']}; "
                  f"dev GLUE score x 100 after the last epoch; mean ± std [95% CI] over "
                  f"{s['ft_seeds']} seeds.", ""]
        _seed_table(lines, m["finetune"], labels, columns)
        const = m["finetune"]["constant_predictions"]
        lines += ["Seeds whose dev predictions are one class (did not leave the majority class):", "",
                  "| checkpoint | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        for l in labels:
            lines.append(f"| {l} | " + " | ".join(
                ("—" if glue_regression(t) else f"{const.get(l, {}).get(t, 0)}/{s['ft_seeds']}")
                for t in tasks) + " |")
        lines.append("")
    if "fewshot" in m:
        lines += ["## 2. Few-shot fine-tuning", "",
                  f"n training examples per task, a fresh draw per draw index (the same for every "
                  f"checkpoint), {s['fs_draws']} draws; {s['fs_epochs']} epochs, at least "
                  f"{s['fs_min_updates']} updates, lr {s['fs_lr']}, batch {s['fs_batch_size']}.", ""]
        for n, block in m["fewshot"]["by_n"].items():
            lines += [f"### n = {n}", ""]
            _seed_table(lines, block, labels, columns, what="draws")
    if "probe" in m:
        p = m["probe"]
        lines += ["## 3. Frozen-feature probe", "",
                  "Logistic regression (ridge for STS-B) with cross-validated regularisation on "
                  "frozen features; dev GLUE score x 100 [95% bootstrap interval over dev examples, "
                  f"{p['bootstrap']['resamples']} resamples].", "",
                  "| checkpoint | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for l in labels:
            row = p["summary"].get(l, {})
            lines.append(f"| {l} | " + " | ".join(
                "n/a" if c not in row else f"{_f(row[c]['estimate'])} [{_f(row[c]['ci_low'])}, {_f(row[c]['ci_high'])}]"
                for c in columns) + " |")
        if p["paired_to_first"]:
            lines += ["", f"Paired bootstrap differences to `{labels[0]}`: difference [95% CI], "
                      "separation in bootstrap SE, MDE = 2.80 SE.", "",
                      "| checkpoint | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
            for l in labels[1:]:
                row = p["paired_to_first"].get(l, {})
                lines.append(f"| {l} − {labels[0]} | " + " | ".join(
                    "n/a" if c not in row else
                    f"{row[c]['estimate']:+.2f} [{_f(row[c]['ci_low'])}, {_f(row[c]['ci_high'])}], "
                    f"{_f(row[c]['separation'], 1)} SE, MDE {_f(row[c]['mde'])}" for c in columns) + " |")
        lines.append("")
    if "adaptation" in m:
        steps = [f"t={t}" for t in s["ad_steps"]]
        lines += ["## 4. Adapting to a new domain", "",
                  f"Masked-LM loss (bits per masked token) on {s['ad_eval_blocks']} fixed, fixed-mask "
                  f"blocks ({s.get('ad_block_tokens') or 'max positions − 1'} tokens) of "
                  f"`{s['domain_eval']}` after t Adam steps (lr {s['ad_lr']}, batch "
                  f"{s['ad_batch_size']}) on `{s['domain_train']}`; {s['ad_seeds']} seeds.", ""]
        _seed_table(lines, m["adaptation"], labels, steps, 3)
    lines += ["## Time (seconds of unit work, summed; wall time is less with --jobs > 1)", "",
              "| checkpoint | " + " | ".join(list(report["timing_seconds"].values())[0].keys()) + " |"]
    keys = list(list(report["timing_seconds"].values())[0].keys())
    lines.append("|---" * (len(keys) + 1) + "|")
    for l, t in report["timing_seconds"].items():
        lines.append(f"| {l} | " + " | ".join(_f(t.get(k), 0) for k in keys) + " |")
    lines.append("")
    (out_dir / "results.md").write_text("\n".join(lines), encoding="utf-8")
    plots(out_dir, report)


def glue_regression(task):
    from ..prep import glue

    return glue.lookup(task).regression


def plots(out_dir, report):
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = report["measurements"]
    labels = [c["label"] for c in report["checkpoints"]]
    if "fewshot" in m:
        by_n = m["fewshot"]["by_n"]
        ns = sorted(int(n) for n in by_n)
        columns = report["tasks"] + ["average"]
        fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3), squeeze=False)
        for ax, col in zip(axes[0], columns):
            for l in labels:
                pts = [(n, by_n[str(n)]["summary"].get(l, {}).get(col)) for n in ns]
                pts = [(n, s) for n, s in pts if s and s.get("mean") is not None]
                if not pts:
                    continue
                x = [n for n, _ in pts]
                y = [s["mean"] for _, s in pts]
                err = [(s["mean"] - s["ci_low"]) if s.get("ci_low") is not None else 0 for _, s in pts]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=l)
            ax.set_xscale("log", base=2)
            ax.set_title(col)
            ax.set_xlabel("training examples n")
        axes[0][0].set_ylabel("dev score x 100 (95% CI)")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "fewshot.png", dpi=110)
        plt.close(fig)
    if "adaptation" in m:
        steps = report["settings"]["ad_steps"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for l in labels:
            row = m["adaptation"]["summary"].get(l, {})
            pts = [(t, row.get(f"t={t}")) for t in steps]
            pts = [(t, s) for t, s in pts if s and s.get("mean") is not None]
            if pts:
                ax.errorbar([t + 1 for t, _ in pts], [s["mean"] for _, s in pts],
                            yerr=[(s["mean"] - s["ci_low"]) if s.get("ci_low") is not None else 0
                                  for _, s in pts], marker="o", capsize=3, label=l)
        ax.set_xscale("log")
        ax.set_xlabel("adaptation steps t (+1, log scale)")
        ax.set_ylabel("held-out MLM loss (bits)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "adaptation.png", dpi=110)
        plt.close(fig)
