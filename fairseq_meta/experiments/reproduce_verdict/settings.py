"""The verdict's settings: the two modes (full, quick), their checks, and the
experiment object the stages share."""
import math
from pathlib import Path

from ...errors import MetaConfigError
from ...run.cli import Cli
from .. import experiment

cli = Cli("reproduce_verdict.py")

# Settings of the two modes; every one can be overridden on the command line.
# "full" is the hand-run design of docs/results.md (Verdict, issue 10).
MODES = {
    "full": dict(
        layers=2, embed_dim=128, ffn_dim=512, heads=2, tokens_per_sample=128, batch_size=16,
        lr=1e-3, warmup=500, updates=1500, checkpoint_interval=500, valid_interval=500,
        log_interval=100, dropout=0.1, weight_decay=0.01,
        sgd_inner_lrs="0.01,0.03,0.1,0.3", adam_inner_lrs="3e-4,1e-3,3e-3",
        reptile_inner_lrs="", learned_inner_lrs="",
        sweep_seed=1, seeds="2,3,4", corpus="gutenberg", vocab_size=8000,
        spm_input_lines=300000, ad_steps="0,1,4,16,64", ad_seeds=5, ad_eval_blocks=256,
        ad_lr=5e-4, ad_batch_size=16, device="cpu", fp16=0,
        nsp=1, extras=1, supervised_tasks="SST-2,MRPC,CoLA", heldout_tasks="RTE,STS-B",
        supervised_updates=400, supervised_lr=1e-4, supervised_sampling_alpha=0.5,
        glue_max_rows=0, ft_seeds=1, ft_epochs=3,
        ft_max_train=4000, init_from="", ft_tasks="", ft_lr=2e-4, fs_sizes="", fs_draws=3,
        probe_max_train=0),
    "quick": dict(
        layers=1, embed_dim=32, ffn_dim=64, heads=2, tokens_per_sample=32, batch_size=4,
        lr=1e-3, warmup=2, updates=8, checkpoint_interval=4, valid_interval=4,
        log_interval=2, dropout=0.1, weight_decay=0.01,
        sgd_inner_lrs="0.1", adam_inner_lrs="1e-3", reptile_inner_lrs="", learned_inner_lrs="",
        sweep_seed=1, seeds="2", corpus="gutenberg/nltk-selections/chesterton-thursday.txt",
        vocab_size=400, spm_input_lines=5000, ad_steps="0,1,2", ad_seeds=2, ad_eval_blocks=4,
        ad_lr=5e-4, ad_batch_size=4, device="cpu", fp16=0,
        nsp=1, extras=1, supervised_tasks="SST-2,MRPC,CoLA", heldout_tasks="RTE,STS-B",
        supervised_updates=4, supervised_lr=1e-4, supervised_sampling_alpha=0.5,
        glue_max_rows=120, ft_seeds=1, ft_epochs=1,
        ft_max_train=100, init_from="", ft_tasks="", ft_lr=2e-4, fs_sizes="", fs_draws=2,
        probe_max_train=0),
}
# Settings added after OUT directories were made: a settings.json without the key
# was made with this value (the one the code used before the setting existed).
ADDED_SETTINGS = {"supervised_sampling_alpha": 0.5, "probe_max_train": 0}
# The sweep table's adaptation gain, inner and outer move and support loss are means
# over the train_inner rows of the last 30% of the U updates (1050 < u <= 1500 at
# U = 1500, as in the hand-run table).
SUMMARY_WINDOW = 0.3
# What --init-from MODEL_DIR (a directory of scripts/import_model.py) brings with it
# and so replaces: the architecture (its model_args.txt) and the tokenizer.
INIT_REPLACES = ("layers", "embed_dim", "ffn_dim", "heads", "vocab_size", "spm_input_lines")
PRECONDITIONERS = {"sgd": "SGD", "adam": "Adam-preconditioned"}
# --KIND-inner-lrs: the settings the sweep tries, per kind: the inner rule, the
# meta-objective, whether α is learned (from the listed value, per tensor) and the
# inner steps k. Reptile takes k = 2: at k = 1 with plain SGD its outer gradient is
# k = 0's (docs/algorithm.md), and with 2 it reads 2 mini-batches an update, as
# MAML's k = 1 (1 meta-train, 1 meta-test) does, so equal tokens stays k = 0 at 2U.
SWEEP_KINDS = {
    "sgd": dict(preconditioner="sgd", objective="maml", learned="none", steps=1),
    "adam": dict(preconditioner="adam", objective="maml", learned="none", steps=1),
    "reptile": dict(preconditioner="sgd", objective="reptile", learned="none", steps=2),
    "learned": dict(preconditioner="sgd", objective="maml", learned="tensor", steps=1),
}


def settings_for(quick, overrides, data_root):
    """The settings of a mode with ``overrides`` (None = the mode's value), checked.
    Returns (settings, derived): derived holds the parsed lists and paths."""
    s = experiment.mode_settings(MODES, quick, overrides, [
        "layers", "embed_dim", "ffn_dim", "heads", "tokens_per_sample", "batch_size", "updates",
        "checkpoint_interval", "valid_interval", "log_interval", "vocab_size", "spm_input_lines",
        "ad_seeds", "ad_eval_blocks", "ad_batch_size", "supervised_updates", "ft_epochs",
        "ft_max_train", "fs_draws"])
    for key in ["warmup", "glue_max_rows", "ft_seeds", "probe_max_train"]:
        if s[key] < 0:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be >= 0 (got {s[key]})")
    if s["embed_dim"] % s["heads"]:
        raise MetaConfigError(f"--embed-dim {s['embed_dim']} is not divisible by --heads {s['heads']}")
    for key in ["checkpoint_interval", "valid_interval"]:
        if s["updates"] % s[key]:
            raise MetaConfigError(f"--updates {s['updates']} is not a multiple of "
                                  f"--{key.replace('_', '-')} {s[key]} (U and 2U need one)")
        if s[key] % s["log_interval"]:
            raise MetaConfigError(f"--{key.replace('_', '-')} {s[key]} is not a multiple of "
                                  f"--log-interval {s['log_interval']} (tokens are counted per log row)")
    for key in ["nsp", "fp16", "extras"]:
        if s[key] not in (0, 1):
            raise MetaConfigError(f"--{key} must be 0 or 1 (got {s[key]})")
    if s["fp16"] and s["device"] != "cuda":
        raise MetaConfigError("--fp16 1 needs --device cuda (fairseq's fp16 trains on a GPU)")
    for key in ["lr", "ad_lr", "supervised_lr", "ft_lr"]:
        if not s[key] > 0:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be positive (got {s[key]})")
    from ...evaluation.runner import check_device

    check_device(s["device"], need_gpu=False)  # the GPU itself: main(), unless --report-only
    if not s["supervised_sampling_alpha"] >= 0:
        raise MetaConfigError("--supervised-sampling-alpha must be >= 0 (got "
                              f"{s['supervised_sampling_alpha']})")
    for key in ["dropout", "weight_decay"]:
        if not 0 <= s[key] < 1:
            raise MetaConfigError(f"--{key.replace('_', '-')} must be in [0, 1) (got {s[key]})")
    settings_list = []
    for kind, rule in SWEEP_KINDS.items():
        text = s[f"{kind}_inner_lrs"].strip()
        for item in [x.strip() for x in text.split(",")] if text else []:
            try:
                alpha = float(item)
            except ValueError:
                alpha = float("nan")
            if not (alpha > 0 and math.isfinite(alpha)):
                raise MetaConfigError(f"--{kind}-inner-lrs wants comma-separated positive "
                                      f"numbers (got '{item}')")
            settings_list.append({"name": f"{kind}{item}", "alpha": alpha, **rule})
    if not settings_list:
        raise MetaConfigError("the sweep needs at least one inner setting "
                              "(--sgd-inner-lrs, --adam-inner-lrs)")
    names = [x["name"] for x in settings_list]
    if len(set(names)) != len(names):
        raise MetaConfigError(f"an inner setting is listed twice ({', '.join(names)})")
    try:
        seeds = [int(x) for x in s["seeds"].split(",")]
    except ValueError:
        raise MetaConfigError(f"--seeds must be comma-separated integers (got '{s['seeds']}')")
    if len(set(seeds)) != len(seeds) or s["sweep_seed"] in seeds:
        raise MetaConfigError(f"--seeds must be distinct and differ from --sweep-seed "
                              f"{s['sweep_seed']} (got {s['seeds']})")
    try:
        ad_steps = sorted({int(x) for x in s["ad_steps"].split(",")})
    except ValueError:
        raise MetaConfigError(f"--ad-steps must be comma-separated integers (got '{s['ad_steps']}')")
    if ad_steps[0] < 0 or 0 not in ad_steps or len(ad_steps) < 2:
        raise MetaConfigError(f"--ad-steps must hold 0 and a positive step count (got '{s['ad_steps']}')")
    data_root = Path(data_root)
    corpus = data_root / s["corpus"]
    if not corpus.exists():
        raise MetaConfigError(f"corpus {corpus} not found (--corpus relative to --data-root {data_root})")
    domain = {split: data_root / "wikitext-2" / f"{split}.txt" for split in ("valid", "test")}
    for path in domain.values():
        if not path.is_file():
            raise MetaConfigError(f"adaptation domain {path} not found (--data-root {data_root})")
    supervised, heldout = _glue_tasks(s, data_root)
    # GLUE fine-tuning of the pre-training checkpoints (evaluate.py's measurement 1)
    ft_tasks = _task_list(s, "ft_tasks")
    _check_task_dirs(ft_tasks, data_root)
    fs_sizes = _fewshot_sizes(s, ft_tasks, supervised)
    derived = {"init": _init_from(s, overrides), "ft_tasks": ft_tasks, "fs_size_list": fs_sizes,
               "inner_settings": settings_list, "fresh_seeds": seeds, "ad_step_list": ad_steps,
               "corpus_path": corpus, "domain": domain, "supervised_tasks": supervised,
               "heldout_tasks": heldout}
    return s, derived


def given_setting(derived):
    """The k = 1 treatment of ``--supervised-only``: the one inner setting listed, taken
    as given (no sweep selects it). The supervised phase must start from an imported
    model: from scratch it starts from the MLM runs that this mode skips."""
    if not derived["init"]:
        raise MetaConfigError("--supervised-only needs --init-from (without it the supervised phase "
                              "starts from the MLM runs this mode skips)")
    if not derived["supervised_tasks"]:
        raise MetaConfigError("--supervised-only needs --supervised-tasks")
    names = [x["name"] for x in derived["inner_settings"]]
    if len(names) != 1:
        raise MetaConfigError("--supervised-only takes k = 1's inner setting as given: list exactly one "
                              f"in --sgd/--adam/--reptile/--learned-inner-lrs (got {', '.join(names)})")
    return derived["inner_settings"][0]


def _init_from(s, overrides):
    """None, or what the pre-training runs start from: {dir, model, flags, max_positions}."""
    if not s["init_from"]:
        return None
    given = [f"--{k.replace('_', '-')}" for k in INIT_REPLACES if overrides.get(k) is not None]
    if given:
        raise MetaConfigError(f"--init-from brings its architecture and tokenizer; drop {', '.join(given)}")
    model_dir = Path(s["init_from"]).resolve()
    for name in ("model.pt", "model_args.txt", "tokenizer.json", "dict.txt", "import.json"):
        if not (model_dir / name).is_file():
            raise MetaConfigError(f"--init-from {model_dir}: no {name} (not a directory written by "
                                  "scripts/import_model.py)")
    flags = (model_dir / "model_args.txt").read_text(encoding="utf-8").split()
    max_positions = int(flags[flags.index("--max-positions") + 1]) if "--max-positions" in flags else None
    if max_positions is not None and s["tokens_per_sample"] > max_positions:
        raise MetaConfigError(f"--tokens-per-sample {s['tokens_per_sample']} exceeds the imported "
                              f"model's {max_positions} positions")
    return {"dir": model_dir, "model": model_dir / "model.pt", "flags": flags,
            "max_positions": max_positions or s["tokens_per_sample"]}


def _fewshot_sizes(s, ft_tasks, supervised):
    """--fs-sizes as a sorted list; few-shot needs tasks to run on (--ft-tasks, or the
    supervised phase's held-out tasks); --ft-seeds 0 leaves fine-tuning out, so it needs
    --fs-sizes or --probe-max-train wherever GLUE is measured."""
    text = s["fs_sizes"].strip()
    try:
        sizes = sorted({int(x) for x in text.split(",")}) if text else []
    except ValueError:
        sizes = [0]
    if any(n < 1 for n in sizes):
        raise MetaConfigError(f"--fs-sizes wants comma-separated positive integers (got '{s['fs_sizes']}')")
    if sizes and not (ft_tasks or supervised):
        raise MetaConfigError("--fs-sizes needs --ft-tasks or --supervised-tasks (the few-shot runs are on "
                              "the --ft-tasks and the supervised phase's --heldout-tasks)")
    if s["fs_draws"] < 2 and sizes:
        raise MetaConfigError(f"--fs-draws must be at least 2 (got {s['fs_draws']}): the paired "
                              "comparison needs a spread")
    probe = s["probe_max_train"] > 0
    if probe and not (ft_tasks or supervised):
        raise MetaConfigError("--probe-max-train needs --ft-tasks or --supervised-tasks (the probe runs on "
                              "the --ft-tasks and the supervised phase's --heldout-tasks)")
    if s["ft_seeds"] == 0 and ft_tasks and not (sizes or probe):
        raise MetaConfigError("--ft-seeds 0 with --ft-tasks measures nothing: give --fs-sizes or "
                              "--probe-max-train")
    if s["ft_seeds"] == 0 and supervised and not (sizes or probe):
        raise MetaConfigError("--ft-seeds 0 leaves the supervised phase unjudged: give --ft-seeds >= 1, "
                              "--fs-sizes or --probe-max-train (or --supervised-tasks '')")
    return sizes


def _task_list(s, key):
    from ...prep.glue import lookup

    names = [x.strip() for x in s[key].split(",") if x.strip()]
    try:
        tasks = [lookup(name).name for name in names]
    except MetaConfigError as e:
        raise MetaConfigError(f"--{key.replace('_', '-')}: {e}") from None
    if len(set(tasks)) != len(tasks):
        raise MetaConfigError(f"--{key.replace('_', '-')} lists a task twice ({s[key]})")
    return tasks


def _glue_tasks(s, data_root):
    """(supervised tasks, held-out tasks) as canonical GLUE names; ([], []) when
    --supervised-tasks is empty (no supervised phase)."""
    supervised, heldout = _task_list(s, "supervised_tasks"), _task_list(s, "heldout_tasks")
    if not supervised:
        return [], []
    if not heldout:
        raise MetaConfigError("--heldout-tasks is empty: the supervised phase is judged on tasks "
                              "it did not train on")
    both = sorted(set(supervised) & set(heldout))
    if both:
        raise MetaConfigError(f"--heldout-tasks must not hold a supervised task ({', '.join(both)})")
    _check_task_dirs(supervised + heldout, data_root)
    return supervised, heldout


def _check_task_dirs(names, data_root):
    from ...prep.glue import find_task_dir

    for name in names:
        if find_task_dir(data_root / "glue", name) is None:
            raise MetaConfigError(f"GLUE task {name}: {data_root / 'glue' / name} not found "
                                  f"(--data-root {data_root})")


class VerdictExperiment(experiment.Experiment):
    """experiment.Experiment plus the parsed settings (``derived``)."""

    def __init__(self, out, settings, derived, quick, jobs, data_root):
        super().__init__(out=out, settings=settings, quick=quick, jobs=jobs, data_root=data_root)
        self.derived = derived
