"""``scripts/evaluate.py``: score pre-trained checkpoints four ways, resumably.

Work is cut into units (one fine-tuning run, one few-shot draw, one probe, one
adaptation seed); each unit's result is written to
``OUT/units/<checkpoint sha256>/<measurement>-<settings hash>/<unit>.json`` as
soon as it finishes, and a re-run with the same settings skips every unit that
has its file. ``results.json``, ``results.md`` and the plots are rebuilt from
the unit files at the end of every run.
"""
import hashlib
import json
import math
import os
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..prep import glue
from ..errors import MetaConfigError
from ..run.finetune import DEFAULT_CONFIG_DIR, REPO
from . import stats
from .model import inspect

MEASUREMENTS = ("finetune", "fewshot", "probe", "adaptation")
DEFAULT_TASKS = ("RTE", "MRPC", "CoLA", "STS-B", "SST-2")
SHARED = REPO.parent / "shared" / "data"


COUNTS = ("ft_seeds", "fs_draws", "ad_seeds")


def _quiet(message):
    pass


@dataclass
class Settings:
    checkpoints: list
    out_dir: str
    glue_dir: str = str(SHARED / "glue")
    tasks: list = field(default_factory=lambda: list(DEFAULT_TASKS))
    measurements: list = field(default_factory=lambda: list(MEASUREMENTS))
    dict_path: str = None
    tokenizer: str = None       # spm.model or tokenizer.json (default: beside the data)
    config_dir: str = str(DEFAULT_CONFIG_DIR)
    glue_max_rows: int = None
    # 1. fine-tuning
    ft_seeds: int = 3
    ft_epochs: int = 3
    ft_lr: float = 2e-4
    ft_batch_size: int = 32
    ft_max_train: int = 4000
    # 2. few-shot
    fs_sizes: list = field(default_factory=lambda: [32, 128, 512])
    fs_draws: int = 5
    fs_epochs: int = 5
    fs_min_updates: int = 50
    fs_lr: float = 2e-4
    fs_batch_size: int = 16
    # 3. probe
    probe_max_train: int = None
    probe_bootstrap: int = 1000
    # 4. adaptation
    domain_train: str = str(SHARED / "wikitext-2" / "valid.txt")
    domain_eval: str = str(SHARED / "wikitext-2" / "test.txt")
    ad_steps: list = field(default_factory=lambda: [0, 1, 4, 16, 64])
    ad_seeds: int = 5
    ad_lr: float = 5e-4
    ad_batch_size: int = 16
    ad_eval_blocks: int = 256
    # tokens per block (<s> comes on top); None: the checkpoint's max_positions - 1.
    # A run pre-trained on shorter blocks than its positions allow (continued
    # pre-training of an import) is measured on the blocks it was trained on.
    ad_block_tokens: int = None
    # the effect (score points) the paired comparisons should detect: the report
    # gives the seeds / draws each comparison needs for it
    target_effect: float = 1.0
    jobs: int = 1
    # where every unit runs: "cpu" or "cuda" (fp32 on either)
    device: str = "cpu"
    quick: bool = False

    def apply_quick(self):
        """Tiny budgets for the end-to-end test (numbers not comparable)."""
        self.glue_max_rows = self.glue_max_rows or 120
        self.ft_seeds, self.ft_epochs, self.ft_max_train = 2, 1, 100
        self.fs_sizes, self.fs_draws, self.fs_epochs, self.fs_min_updates = [8, 16], 2, 1, 2
        self.probe_bootstrap = 50
        self.ad_steps, self.ad_seeds, self.ad_eval_blocks = [0, 1, 2], 2, 4

    def part(self, kind):
        """The settings a unit of ``kind`` depends on (its cache key)."""
        common = {"glue_max_rows": self.glue_max_rows, "config_dir": self.config_dir}
        # a GPU's scores are not the CPU's to the last digit, so they are other units;
        # the CPU's keys are the ones written before the option existed
        device = {} if self.device == "cpu" else {"device": self.device}
        prefix = {"finetune": "ft_", "fewshot": "fs_", "probe": "probe_", "adaptation": "ad_"}[kind]
        # how many seeds/draws is not part of a unit: more of them reuse the ones that exist
        own = {k: v for k, v in asdict(self).items() if k.startswith(prefix) and k not in COUNTS}
        if kind == "adaptation":
            if self.ad_block_tokens is None:  # the keys written before the option
                del own["ad_block_tokens"]
            own.update(domain_train=self.domain_train, domain_eval=self.domain_eval, **device)
            return own
        return {**common, **own, **device}


def _key(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- #
# Checks (all before anything is written)
# --------------------------------------------------------------------------- #
def check_device(device, need_gpu=True):
    """Refuse a device other than cpu or cuda and, with ``need_gpu``, cuda where torch
    sees no GPU. reproduce_verdict checks with it too, before hours of training (and
    without ``need_gpu`` for --report-only, which may rebuild a GPU run's report here)."""
    if device not in ("cpu", "cuda"):
        raise MetaConfigError(f"--device must be cpu or cuda (got '{device}')")
    if device == "cuda" and need_gpu:
        import torch

        if not torch.cuda.is_available():
            raise MetaConfigError("--device cuda: torch sees no CUDA device (use --device cpu)")


def parse_checkpoint_args(items):
    out, seen = [], set()
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or "/" in label:
            label, path = Path(item).stem, item
        if label in seen:
            parent = Path(path).resolve().parent.parent.name
            label = f"{parent}/{label}" if parent else label
        if label in seen:
            raise MetaConfigError(f"two checkpoints are named {label!r}; name them NAME=PATH")
        seen.add(label)
        out.append((label, path))
    return out


def check_glue(settings):
    """[(GlueTask, [(split, path)])] of the tasks, each with train and dev files
    whose labels are readable (the first rows are read here, all of them when the
    data is prepared)."""
    from ..prep import glue_data

    if not Path(settings.glue_dir).is_dir():
        raise MetaConfigError(f"--glue-dir {settings.glue_dir} not found")
    selected, _ = glue_data.select_tasks(settings.glue_dir, settings.tasks)
    for task, files in selected:
        splits = dict(files)
        if "train" not in splits:
            raise MetaConfigError(f"{task.name}: no train file in {settings.glue_dir}")
        glue_data.read_task(task, files, max_rows=3)
        if not (Path(settings.config_dir) / f"{task.config}.yaml").is_file():
            raise MetaConfigError(f"{task.name}: no {task.config}.yaml in {settings.config_dir}")
    return selected


def check(settings, log=_quiet):
    if not settings.checkpoints:
        raise MetaConfigError("no checkpoint given")
    unknown = [m for m in settings.measurements if m not in MEASUREMENTS]
    if unknown or not settings.measurements:
        raise MetaConfigError(f"unknown measurement {unknown[0] if unknown else ''!r} "
                              f"(known: {', '.join(MEASUREMENTS)})")
    out = Path(settings.out_dir)
    if out.exists() and not out.is_dir():
        raise MetaConfigError(f"--out-dir {out} exists and is not a directory")
    for name in ("ft_seeds", "fs_draws", "ad_seeds", "jobs", "ft_epochs", "fs_epochs"):
        if getattr(settings, name) < 1:
            raise MetaConfigError(f"--{name.replace('_', '-')} must be >= 1")
    check_device(settings.device)
    if not settings.target_effect > 0:
        raise MetaConfigError("--target-effect must be > 0 (score points)")
    if "fewshot" in settings.measurements and settings.fs_draws < 2:
        raise MetaConfigError("--fs-draws must be >= 2 (a standard deviation needs two draws)")
    checkpoints = [inspect(path, label, settings.dict_path, settings.tokenizer)
                   for label, path in parse_checkpoint_args(settings.checkpoints)]
    for ck in checkpoints:
        log(f"{ck.label}: {ck.path} ({ck.num_updates} updates, {ck.model['encoder_layers']} layers, "
            f"dim {ck.model['encoder_embed_dim']})")
    tasks = None
    if set(settings.measurements) & {"finetune", "fewshot", "probe"}:
        tasks = check_glue(settings)
    if "adaptation" in settings.measurements:
        if settings.ad_block_tokens is not None:
            longest = min(c.model["max_positions"] for c in checkpoints) - 1
            if not 1 <= settings.ad_block_tokens <= longest:
                raise MetaConfigError(f"--ad-block-tokens must be in [1, {longest}] (max positions - 1 of "
                                      f"the checkpoints; got {settings.ad_block_tokens})")
        for ck in checkpoints:
            # the domain text as every unit of ck reads it, once per (vocabulary, block
            # length); in-process units reuse it
            _domain(settings, ck)
    return checkpoints, tasks


# --------------------------------------------------------------------------- #
# Units
# --------------------------------------------------------------------------- #
def subset_indices(n_total, n, seed):
    """A fixed draw of ``n`` of ``n_total`` example indices (sorted), or None for all."""
    if n is None or n >= n_total:
        return None
    return np.sort(np.random.RandomState(seed).choice(n_total, size=n, replace=False))


def fewshot_indices(task_name, n_total, n, draw):
    """The examples of few-shot draw ``draw`` of size ``n`` for a task: a function of
    (task, n, draw) only, so every checkpoint sees the same ones."""
    seed = (zlib.crc32(task_name.encode()) + 1009 * n + 7919 * draw) % (2 ** 32)
    return np.sort(np.random.RandomState(seed).choice(n_total, size=min(n, n_total), replace=False))


def _n_train(task_dir):
    from fairseq.data import indexed_dataset

    return len(indexed_dataset.MMapIndexedDataset(str(Path(task_dir) / "input0" / "train")))


def plan_units(settings, checkpoints, task_records):
    units = []
    for ck in checkpoints:
        for kind in settings.measurements:
            if kind == "finetune":
                for task in task_records:
                    for seed in range(1, settings.ft_seeds + 1):
                        units.append({"kind": kind, "label": ck.label, "task": task, "seed": seed})
            elif kind == "fewshot":
                for n in settings.fs_sizes:
                    for task in task_records:
                        for draw in range(1, settings.fs_draws + 1):
                            units.append({"kind": kind, "label": ck.label, "task": task, "n": n,
                                          "draw": draw})
            elif kind == "probe":
                for task in task_records:
                    units.append({"kind": kind, "label": ck.label, "task": task})
            else:
                for seed in range(1, settings.ad_seeds + 1):
                    units.append({"kind": kind, "label": ck.label, "seed": seed})
    return units


def unit_name(unit):
    parts = [unit.get("task"), f"n{unit['n']}" if "n" in unit else None,
             f"draw{unit['draw']}" if "draw" in unit else None,
             f"seed{unit['seed']}" if "seed" in unit else None]
    return "-".join(p for p in parts if p)


def unit_path(out_dir, settings, ck, unit):
    # keyed on the file's content, not its name: a renamed or relabelled checkpoint is reused
    return (Path(out_dir) / "units" / ck.sha256[:16]
            / f"{unit['kind']}-{_key(settings.part(unit['kind']))}" / f"{unit_name(unit)}.json")


_CACHE = {}


def adaptation_block(settings, ck):
    """Tokens per adaptation block of ``ck`` (``<s>`` not counted)."""
    return settings.ad_block_tokens or ck.model["max_positions"] - 1


def _domain(settings, ck):
    block = adaptation_block(settings, ck)
    key = (ck.dict_path, ck.tokenizer, block)
    if key not in _CACHE:
        from .adaptation import make_eval_set
        from .model import load_dictionary, load_tokenizer, read_text_blocks

        sp, dictionary = load_tokenizer(ck.tokenizer, ck.dict_path), load_dictionary(ck.dict_path)
        train, unk_train = read_text_blocks(settings.domain_train, sp, dictionary, block)
        evalb, unk_eval = read_text_blocks(settings.domain_eval, sp, dictionary, block)
        _CACHE[key] = (dictionary, train, make_eval_set(evalb, dictionary, settings.ad_eval_blocks),
                       {"train_blocks": int(len(train)), "eval_blocks": int(min(len(evalb), settings.ad_eval_blocks)),
                        "unk_train": unk_train, "unk_eval": unk_eval})
    return _CACHE[key]


def run_unit(settings, ck, unit, task_dir):
    """The result dict of one unit (runs in this process)."""
    from . import glue_runs

    start = time.time()
    kind = unit["kind"]
    record = glue.lookup(unit["task"]) if "task" in unit else None
    if kind == "finetune":
        idx = subset_indices(_n_train(task_dir), settings.ft_max_train, seed=0)
        res = glue_runs.finetune_run(ck, task_dir, record, unit["seed"], epochs=settings.ft_epochs,
                                     lr=settings.ft_lr, batch_size=settings.ft_batch_size,
                                     train_indices=idx, config_dir=settings.config_dir,
                                     device=settings.device)
    elif kind == "fewshot":
        idx = fewshot_indices(record.name, _n_train(task_dir), unit["n"], unit["draw"])
        res = glue_runs.finetune_run(ck, task_dir, record, unit["draw"], epochs=settings.fs_epochs,
                                     lr=settings.fs_lr, batch_size=settings.fs_batch_size,
                                     min_updates=settings.fs_min_updates, train_indices=idx,
                                     config_dir=settings.config_dir, eval_every_epoch=False,
                                     device=settings.device)
        res["train_indices"] = idx.tolist()
    elif kind == "probe":
        from .model import load_encoder
        from .probe import probe_task

        model, _ = load_encoder(ck)
        model.to(settings.device)
        idx = subset_indices(_n_train(task_dir), settings.probe_max_train, seed=0)
        res = probe_task(ck, model, task_dir, record, idx)
    else:
        from .adaptation import adapt
        from .model import load_encoder

        dictionary, train, eval_set, info = _domain(settings, ck)
        model, _ = load_encoder(ck, dictionary)
        model.to(settings.device)
        curve = adapt(model, dictionary, train, eval_set, unit["seed"], steps=settings.ad_steps,
                      lr=settings.ad_lr, batch_size=settings.ad_batch_size)
        res = {"bits": {str(t): v for t, v in curve.items()}, **info}
    res["seconds"] = round(time.time() - start, 2)
    res["unit"] = unit
    return res


def _write_json(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _worker_init(threads):
    import logging
    import warnings

    import torch

    # fairseq's CPU runs warn on every batch (pin_memory, cuda.amp.autocast)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")

    torch.set_num_threads(threads)
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    logging.getLogger("fairseq_meta").setLevel(logging.WARNING)


def _worker(args):
    settings, ck, unit, task_dir = args
    return run_unit(settings, ck, unit, task_dir)


# --------------------------------------------------------------------------- #
# Aggregation
# --------------------------------------------------------------------------- #
def _mean_or_nan(values):
    values = list(values)
    return float(np.mean(values)) if values and all(math.isfinite(v) for v in values) else float("nan")


def aggregate(settings, checkpoints, task_names, results):
    """results.json's "measurements" from the unit results
    ({(label, kind, unit name): result})."""
    labels = [c.label for c in checkpoints]
    base = labels[0]
    out = {}

    def per_seed_block(raw_by_label):
        """raw {label: {column: {seed: value}}} -> summary and paired per column."""
        summary = {l: {col: stats.summary(list(v.values())) for col, v in cols.items()}
                   for l, cols in raw_by_label.items()}
        paired = {}
        for l in labels[1:]:
            if l in raw_by_label and base in raw_by_label:
                paired[l] = {col: stats.paired(raw_by_label[l][col], raw_by_label[base].get(col, {}),
                                                   target=settings.target_effect)
                             for col in raw_by_label[l]}
        return {"raw": raw_by_label, "summary": summary, "paired_to_first": paired}

    def with_average(cols):
        seeds = set.intersection(*(set(v) for v in cols.values())) if cols else set()
        if cols and len(cols) == len(task_names):
            cols["average"] = {s: _mean_or_nan(cols[t][s] for t in task_names) for s in sorted(seeds)}
        return cols

    if "finetune" in settings.measurements:
        raw, constant, detail = {}, {}, {}
        for l in labels:
            cols = {}
            for t in task_names:
                for s in range(1, settings.ft_seeds + 1):
                    r = results.get((l, "finetune", f"{t}-seed{s}"))
                    if r is None:
                        continue
                    cols.setdefault(t, {})[str(s)] = r["score"]
                    constant.setdefault(l, {}).setdefault(t, 0)
                    constant[l][t] += int(r["constant"])
                    detail.setdefault(l, {}).setdefault(t, {})[str(s)] = {
                        "metrics": r["metrics"], "epochs": r["epochs"], "updates": r["updates"],
                        "n_train": r["n_train"], "n_dev": r["n_dev"], "constant": r["constant"]}
            raw[l] = with_average(cols)
        out["finetune"] = {**per_seed_block(raw), "constant_predictions": constant, "runs": detail}
    if "fewshot" in settings.measurements:
        block = {}
        for n in settings.fs_sizes:
            raw = {}
            for l in labels:
                cols = {}
                for t in task_names:
                    for d in range(1, settings.fs_draws + 1):
                        r = results.get((l, "fewshot", f"{t}-n{n}-draw{d}"))
                        if r is not None:
                            cols.setdefault(t, {})[str(d)] = r["score"]
                raw[l] = with_average(cols)
            block[str(n)] = per_seed_block(raw)
        out["fewshot"] = {"by_n": block}
    if "probe" in settings.measurements:
        out["probe"] = aggregate_probe(settings, labels, task_names, results)
    if "adaptation" in settings.measurements:
        raw = {}
        for l in labels:
            cols = {}
            for s in range(1, settings.ad_seeds + 1):
                r = results.get((l, "adaptation", f"seed{s}"))
                if r is not None:
                    for t, v in r["bits"].items():
                        cols.setdefault(f"t={t}", {})[str(s)] = v
            raw[l] = cols
        out["adaptation"] = per_seed_block(raw)
    return out


def aggregate_probe(settings, labels, task_names, results):
    from ..prep.glue_metrics import METRICS

    base = labels[0]
    idx_cache = {}
    point, boot = {}, {}
    for l in labels:
        point[l], boot[l] = {}, {}
        for t in task_names:
            r = results.get((l, "probe", t))
            if r is None:
                continue
            record = glue.lookup(t)
            preds, gold = np.asarray(r["preds"]), np.asarray(r["gold"])
            if t not in idx_cache:
                idx_cache[t] = stats.bootstrap_indices(len(gold), settings.probe_bootstrap, seed=0)
            point[l][t] = r["score"]
            vals = []
            for idx in idx_cache[t]:
                m = {k: METRICS[k](preds[idx], gold[idx]) for k in record.metrics}
                vals.append(100.0 * glue.task_score(record, m))
            boot[l][t] = np.asarray(vals)
        if len(point[l]) == len(task_names):
            point[l]["average"] = _mean_or_nan(point[l][t] for t in task_names)
            boot[l]["average"] = np.mean([boot[l][t] for t in task_names], axis=0)

    def summarise(values, point_value):
        v = values[np.isfinite(values)]
        se = float(v.std(ddof=1)) if len(v) > 1 else None
        lo, hi = (np.percentile(v, [2.5, 97.5]) if len(v) else (None, None))
        return {"estimate": point_value, "se": se, "ci_low": None if lo is None else float(lo),
                "ci_high": None if hi is None else float(hi),
                "separation": (point_value / se) if se else None,
                "mde": stats.normal_mde(se)}

    summary = {l: {c: summarise(boot[l][c], point[l][c]) for c in point[l]} for l in labels}
    for l in labels:
        for c in summary[l]:
            summary[l][c].pop("separation")
    paired = {}
    for l in labels[1:]:
        paired[l] = {c: summarise(boot[l][c] - boot[base][c], point[l][c] - point[base][c])
                     for c in point[l] if c in point[base]}
    details = {l: {t: {k: results[(l, "probe", t)][k] for k in ("metrics", "regularisation", "n_train", "n_dev", "constant")}
                   for t in task_names if (l, "probe", t) in results} for l in labels}
    return {"score": point, "summary": summary, "paired_to_first": paired, "runs": details,
            "bootstrap": {"resamples": settings.probe_bootstrap, "seed": 0}}


# --------------------------------------------------------------------------- #
def versions():
    import platform

    import fairseq
    import sklearn
    import torch

    commit = None
    try:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        pass
    return {"python": platform.python_version(), "torch": torch.__version__,
            "fairseq": fairseq.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "fairseq_meta_commit": commit}


def prepare_glue_data(settings, checkpoints, tasks, out_dir, log):
    """{(dict_path, tokenizer): {task: prepared dir}}, prepared once per pair and
    kept under a key of both files' contents (reused by later runs)."""
    from ..prep import glue_data
    from .model import sha256

    dirs = {}
    for d, s in sorted({(c.dict_path, c.tokenizer) for c in checkpoints}):
        key = _key([sha256(d), sha256(s)])
        dest = out_dir / "glue" / f"{key}-rows{settings.glue_max_rows or 'all'}"
        todo = [(t, f) for t, f in tasks if not (dest / t.name / "meta.json").is_file()]
        if todo:
            log(f"preparing GLUE ({', '.join(t.name for t, _ in todo)}) with {s} into {dest}")
            encoder = ({"tokenizer_from": str(Path(s).parent)} if Path(s).name == "tokenizer.json"
                       else {"spm_model": s})
            glue_data.prepare_glue(todo, str(dest), dict_path=d, max_rows=settings.glue_max_rows,
                                   force=True, **encoder)
        dirs[(d, s)] = {t.name: str(dest / t.name) for t, _ in tasks}
    return dirs


def evaluate(settings, log=_quiet):
    """Check everything, run the missing units, write the reports. Returns the report."""
    if settings.quick:
        settings.apply_quick()
    checkpoints, tasks = check(settings, log)
    task_names = [t.name for t, _ in tasks] if tasks else []
    out_dir = Path(settings.out_dir).resolve()
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        glue_dirs = prepare_glue_data(settings, checkpoints, tasks, out_dir, log) if tasks else {}
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    by_label = {c.label: c for c in checkpoints}
    units = plan_units(settings, checkpoints, task_names)
    todo, results = [], {}
    for unit in units:
        ck = by_label[unit["label"]]
        path = unit_path(out_dir, settings, ck, unit)
        if path.is_file():
            results[(unit["label"], unit["kind"], unit_name(unit))] = json.loads(path.read_text())
        else:
            task_dir = glue_dirs[(ck.dict_path, ck.tokenizer)][unit["task"]] if "task" in unit else None
            todo.append((settings, ck, unit, task_dir))
    from ..run.threads import intra_op_threads

    threads, why = intra_op_threads(settings.jobs)
    log(f"{len(units)} units, {len(units) - len(todo)} done before; running {len(todo)} "
        f"with {settings.jobs} job(s), {threads} thread(s) each ({why})")

    def record(args, res):
        settings_, ck, unit, _ = args
        _write_json(unit_path(out_dir, settings_, ck, unit), res)
        results[(unit["label"], unit["kind"], unit_name(unit))] = res
        done = len(results)
        score = res.get("score", (res.get("bits") or {}).get(str(max(settings.ad_steps))))
        log(f"[{done}/{len(units)}] {unit['label']} {unit['kind']} {unit_name(unit)}: "
            f"{score:.3f} ({res['seconds']:.0f} s)")

    if settings.jobs == 1 or len(todo) <= 1:
        _worker_init(threads)
        for args in todo:
            record(args, _worker(args))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(settings.jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            futures = {pool.submit(_worker, args): args for args in todo}
            for fut in as_completed(futures):
                record(futures[fut], fut.result())

    report = {
        "settings": asdict(settings), "versions": versions(),
        "checkpoints": [c.to_dict() for c in checkpoints],
        "tasks": task_names,
        "headline": headline_name(settings),
        "measurements": aggregate(settings, checkpoints, task_names, results),
        "timing_seconds": timing(settings, checkpoints, results),
    }
    from .report import write_report

    write_report(out_dir, report)
    log(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    return report


def headline_name(settings):
    if "adaptation" in settings.measurements:
        return {"measurement": "adaptation", "column": f"t={max(settings.ad_steps)}",
                "unit": "bits per masked token (lower is better)"}
    return None


def timing(settings, checkpoints, results):
    out = {}
    for c in checkpoints:
        out[c.label] = {}
        for (label, kind, _), r in results.items():
            if label == c.label:
                out[c.label][kind] = round(out[c.label].get(kind, 0.0) + r["seconds"], 1)
        out[c.label]["total"] = round(sum(v for k, v in out[c.label].items()), 1)
    return out
