"""Stage 3: the sweep's logs read and the inner setting selected (OUT/selection.json)."""
import json
from pathlib import Path

from ...errors import MetaConfigError
from .runs import run_name, sweep_runs
from .settings import cli

def read_log(lines):
    """(train rows by update, valid rows by update) from fairseq json log lines. A
    resumed run repeats the updates after its last checkpoint: the last row of an
    update is kept (the pass that led to the checkpoints)."""
    rows = {"train": [], "valid": []}
    for line in lines:
        for kind, tag in (("train", "| train_inner | "), ("valid", "| valid | ")):
            if tag in line:
                try:
                    rows[kind].append(json.loads(line.split(tag, 1)[1]))
                except ValueError:
                    pass
    by_update = []
    for kind, key in (("train", "num_updates"), ("valid", "valid_num_updates")):
        out = {}
        for row in rows[kind]:
            try:
                out[int(row[key])] = row
            except (ValueError, KeyError):
                continue
        by_update.append(out)
    return tuple(by_update)


def read_run_log(path):
    path = Path(path)
    if not path.is_file():
        raise MetaConfigError(f"no training log {path}")
    return read_log(path.read_text(errors="replace").splitlines())


def select(valid_by_run):
    """The selection rule on {name: {update: valid row}} (names in sweep order): the
    lowest ``valid_loss`` at the largest update every run validated at; a tie goes to
    the run listed first. Returns {"update", "selected", "valid_loss": {name: loss}}."""
    if not valid_by_run:
        raise MetaConfigError("no sweep runs to select from")
    common = None
    for name, rows in valid_by_run.items():
        updates = {u for u, r in rows.items() if "valid_loss" in r}
        if not updates:
            raise MetaConfigError(f"sweep run {name} has no validation record")
        common = updates if common is None else common & updates
    if not common:
        raise MetaConfigError("the sweep runs share no validation update: "
                              + "; ".join(f"{n}: {sorted(r)}" for n, r in valid_by_run.items()))
    update = max(common)
    losses = {name: float(rows[update]["valid_loss"]) for name, rows in valid_by_run.items()}
    best = min(losses.values())
    selected = next(name for name, loss in losses.items() if loss == best)
    return {"update": update, "selected": selected, "valid_loss": losses}


def stage_select(exp):
    """OUT/selection.json, written once: a re-run keeps the selection it made."""
    path = exp.out / "selection.json"
    candidates = {run_name(*r): r[2] for r in sweep_runs(exp) if r[1] > 0}
    if path.exists():
        chosen = json.loads(path.read_text())
    else:
        logs = {name: read_run_log(exp.out / "pretrain" / name / "train.log")[1] for name in candidates}
        chosen = select(logs)
        chosen["rule"] = ("lowest valid_loss at θ among the k = 1 first-order sweep runs at the "
                          "largest validation update all of them reached; ties: first listed")
        chosen["setting"] = candidates[chosen["selected"]]
        path.write_text(json.dumps(chosen, indent=1) + "\n")
    if chosen["selected"] not in candidates:
        raise MetaConfigError(f"{path} selects {chosen['selected']}, not a sweep run of these settings")
    cli.log(f"selected: {chosen['selected']} (valid loss {chosen['valid_loss'][chosen['selected']]:.3f} "
            f"at update {chosen['update']})")
    return candidates[chosen["selected"]]
