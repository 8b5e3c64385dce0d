"""Stages 1, 2, 4 and 5: the pre-training and supervised runs, named and spelled
out as fairseq-train commands, and the data they read."""
import sys
from pathlib import Path

from .. import experiment
from ..experiment import REPO, USER_DIR, model_flags, run_step
from .settings import PRECONDITIONERS

# A run is (seed, k, inner setting, order, objective); objective "mlm" or "nsp" (MLM + NSP).
def run_name(seed, k, setting=None, order="first", objective="mlm"):
    suffix = "-nsp" if objective == "nsp" else ""
    if k == 0:
        return f"s{seed}-k0{suffix}"
    return f"s{seed}-k{k}-{setting['name']}" + ("-second" if order == "second" else "") + suffix


def describe(k, setting=None, order="first", objective="mlm"):
    suffix = ", MLM + NSP" if objective == "nsp" else ""
    if k == 0:
        return "k = 0" + suffix
    rule = PRECONDITIONERS[setting["preconditioner"]]
    if setting.get("objective") == "reptile":
        rule = "Reptile, " + rule
    alpha = f"α = {setting['alpha']:g}"
    if setting.get("learned", "none") != "none":
        alpha = f"α learned per {setting['learned']} from {setting['alpha']:g}"
    text = f"k = {k}, {rule} {alpha}"
    return text + (", second order" if order == "second" else "") + suffix


def inner_flags(k, setting, order="first"):
    """The meta-learning flags shared by pre-training and the supervised phase."""
    if k == 0:
        return ["--meta-train-steps", 0]
    flags = ["--meta-train-steps", k, "--inner-lr", setting["alpha"], "--meta-order", order]
    if setting["preconditioner"] == "adam":
        flags += ["--inner-preconditioner", "adam"]
    if setting.get("objective", "maml") != "maml":
        flags += ["--meta-objective", setting["objective"]]
    if setting.get("learned", "none") != "none":
        flags += ["--inner-lr-learned", setting["learned"]]
    return flags


def architecture_flags(exp):
    """The model's flags, ``--max-positions`` among them once: the mode's small RoBERTa,
    or the imported model's own (``model_args.txt``) with ``--init-from``."""
    init = exp.derived.get("init")
    flags = init["flags"] if init else model_flags(exp.settings)
    return flags if "--max-positions" in flags else [*flags, "--max-positions", max_positions(exp)]


def max_positions(exp):
    init = exp.derived.get("init")
    return init["max_positions"] if init else exp.settings["tokens_per_sample"]


def device_flags(s):
    return ["--cpu"] if s["device"] == "cpu" else (["--fp16"] if s["fp16"] else [])


def train_cmd(exp, seed, k, setting=None, order="first", objective="mlm"):
    s, out = exp.settings, exp.out
    run_dir = out / "pretrain" / run_name(seed, k, setting, order, objective)
    max_update = 2 * s["updates"] if k == 0 else s["updates"]
    cmd = [sys.executable, "-m", "fairseq_cli.train", out / "data", "--user-dir", USER_DIR,
           "--task", "meta_masked_lm", "--criterion", "meta_masked_lm", *architecture_flags(exp),
           "--tokens-per-sample", s["tokens_per_sample"],
           "--batch-size", s["batch_size"], "--sample-break-mode", "none",
           "--lr", s["lr"], "--lr-scheduler", "fixed", "--warmup-updates", s["warmup"],
           "--adam-betas", "(0.9,0.98)", "--weight-decay", s["weight_decay"], "--clip-norm", "0",
           "--dropout", s["dropout"], "--max-update", max_update, "--num-workers", "0",
           "--save-dir", run_dir / "checkpoints", "--save-interval-updates", s["checkpoint_interval"],
           "--keep-interval-updates", "-1", "--no-epoch-checkpoints",
           "--validate-interval-updates", s["valid_interval"], "--log-format", "json",
           "--log-interval", s["log_interval"], "--seed", seed]
    cmd += device_flags(s)
    if exp.derived.get("init"):
        # fairseq's way in: weights only, optimizer and data start fresh; a resumed run
        # continues from its own checkpoint_last.pt instead
        cmd += ["--finetune-from-model", exp.derived["init"]["model"]]
    if objective == "nsp":
        cmd += ["--sentence-objective", "nsp"]
    cmd += inner_flags(k, setting, order)
    if k == 0:
        cmd += ["--optimizer", "adam"]
    else:
        cmd += ["--optimizer", "meta_adam", "--valid-adapt-steps", k,
                "--log-adaptation-interval", s["log_interval"]]
    return (f"pretrain {run_dir.name}", cmd, run_dir / "train.log", run_dir / ".done")


def supervised_start_flags(exp, seed):
    """Where the supervised phase of ``seed`` starts, as fairseq-train flags: with
    --init-from the imported model itself (the start every run shares, as a user
    continues from a released encoder), weights only, as the pre-training runs (a resumed
    run continues from its own checkpoint_last.pt; fairseq refuses --reset-* beside
    --finetune-from-model); else s{seed}-k0 at U (a model trained from scratch needs its
    pre-training first), with a fresh optimizer, data order, meters and schedule."""
    init = exp.derived.get("init")
    if init:
        return ["--finetune-from-model", init["model"]]
    start = experiment.checkpoint_file(exp.out / "pretrain" / run_name(seed, 0) / "checkpoints",
                                       exp.settings["updates"])
    return ["--restore-file", start, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
            "--reset-lr-scheduler"]


# The supervised phase's runs of one seed, named as their directories under OUT/supervised:
# k = 0 and k = 1 at U updates (equal updates), k = 0 continued to 2U (equal examples).
SUPERVISED_RUNS = ("k0", "k1", "k0-2U")


def supervised_run_dir(exp, seed, run):
    """OUT/supervised/s{seed}-{run}, ``run`` one of :data:`SUPERVISED_RUNS`."""
    if run not in SUPERVISED_RUNS:
        raise ValueError(f"no supervised run {run!r}: one of {', '.join(SUPERVISED_RUNS)}")
    return exp.out / "supervised" / f"s{seed}-{run}"


def supervised_cmd(exp, seed, k, selected):
    """meta_sentence_prediction on the supervised tasks from :func:`supervised_start_flags`,
    with k = 0 (``k`` 0) or the selected inner setting (``k`` 1: its own k, 2 for
    Reptile); its checkpoint is ``checkpoint_last.pt``."""
    return _supervised_step(exp, seed, k, selected, f"k{k}", exp.settings["supervised_updates"],
                            supervised_start_flags(exp, seed))


def supervised_equal_examples_cmd(exp, seed, selected):
    """The supervised phase's equal-examples baseline, as k = 0 at 2U is the MLM verdict's:
    s{seed}-k0 continued to twice the supervised updates (every k = 1 setting reads two
    mini-batches an update), its optimizer, schedule and data position restored
    (``--restore-file``, no reset) -> ``s{seed}-k0-2U``. Built after s{seed}-k0 has
    finished; a re-run continues from its own checkpoint_last.pt."""
    own = supervised_run_dir(exp, seed, "k0-2U") / "checkpoints" / "checkpoint_last.pt"
    start = own if own.exists() else supervised_run_dir(exp, seed, "k0") / "checkpoints" / "checkpoint_last.pt"
    return _supervised_step(exp, seed, 0, selected, "k0-2U", 2 * exp.settings["supervised_updates"],
                            ["--restore-file", start])


def _supervised_step(exp, seed, k, selected, run, max_update, start_flags):
    s, out = exp.settings, exp.out
    run_dir = supervised_run_dir(exp, seed, run)
    cmd = [sys.executable, "-m", "fairseq_cli.train", out / "glue", "--user-dir", USER_DIR,
           "--task", "meta_sentence_prediction", "--criterion", "meta_sentence_prediction",
           "--optimizer", "meta_adam", "--tasks", ",".join(exp.derived["supervised_tasks"]),
           "--task-sampling-alpha", s["supervised_sampling_alpha"],
           *inner_flags(meta_steps(selected) if k else 0, selected),
           *architecture_flags(exp), "--shorten-method", "truncate",
           "--batch-size", s["batch_size"], "--lr", s["supervised_lr"], "--lr-scheduler", "fixed",
           "--warmup-updates", max(1, s["supervised_updates"] // 10),
           "--max-update", max_update, "--num-workers", "0",
           *start_flags, "--save-dir", run_dir / "checkpoints", "--no-epoch-checkpoints",
           "--log-format", "json", "--log-interval", s["log_interval"], "--seed", seed,
           *device_flags(s)]
    return (f"supervised {run_dir.name}", cmd, run_dir / "train.log", run_dir / ".done")


def meta_steps(setting):
    """k of a sweep setting: 1, or 2 for Reptile (settings.SWEEP_KINDS)."""
    return setting.get("steps", 1)


def sweep_runs(exp):
    """[(seed, k, setting, order)] of the first sweep (before the selection)."""
    seed = exp.settings["sweep_seed"]
    return [(seed, 0, None, "first")] + [(seed, meta_steps(x), x, "first")
                                         for x in exp.derived["inner_settings"]]


def after_selection_runs(exp, selected):
    """[(seed, k, setting, order)]: with ``--extras 1``, k = 2 and second order at the
    selected setting (not for Reptile: first order by construction, and at k = 2
    already); then k = 0 and the selected setting for every fresh seed."""
    seed, runs = exp.settings["sweep_seed"], []
    if exp.settings["extras"] and selected.get("objective") != "reptile":
        runs += [(seed, 2, selected, "first"), (seed, 1, selected, "second")]
    for fresh in exp.derived["fresh_seeds"]:
        runs += [(fresh, 0, None, "first"), (fresh, meta_steps(selected), selected, "first")]
    return runs


def selection_free_runs(exp):
    """The runs after the selection that do not depend on it: the k = 0 ones of
    :func:`after_selection_runs` and :func:`nsp_runs` (every fresh seed's and, with
    --nsp 1, every seed's MLM + NSP). They are queued behind the sweep, so that a core
    the sweep leaves idle (its runs differ in length) takes one."""
    any_selection = {}
    return [run for run in after_selection_runs(exp, any_selection) + nsp_runs(exp, any_selection)
            if run[1] == 0]


def all_seeds(exp):
    return [exp.settings["sweep_seed"]] + exp.derived["fresh_seeds"]


def nsp_runs(exp, selected):
    """MLM + NSP: k = 0 (to 2U) and the selected k = 1 (U) for every seed; none when
    --nsp 0."""
    if not exp.settings["nsp"]:
        return []
    return [run for seed in all_seeds(exp)
            for run in ((seed, 0, None, "first", "nsp"), (seed, meta_steps(selected), selected, "first", "nsp"))]


def tokenizer_flags(exp):
    """How prepare_corpus.py encodes: a sentencepiece model it trains on the corpus
    (OUT/data/spm.model), or the imported model's tokenizer."""
    init, s = exp.derived.get("init"), exp.settings
    if init:
        return ["--tokenizer-from", init["dir"]]
    return ["--vocab-size", s["vocab_size"], "--spm-input-lines", s["spm_input_lines"]]


def vocabulary_files(exp):
    """(dict.txt, tokenizer) that GLUE is encoded with: with --init-from the imported
    model's own (OUT/data holds copies of them), else the corpus's dict.txt and the
    sentencepiece model trained on it (OUT/data)."""
    init = exp.derived.get("init")
    if init:
        return init["dir"] / "dict.txt", init["dir"] / "tokenizer.json"
    return exp.out / "data" / "dict.txt", exp.out / "data" / "spm.model"


def stage_data(exp, env):
    out = exp.out
    run_step("corpus", [sys.executable, REPO / "scripts" / "prepare_corpus.py", "--destdir",
                        out / "data", "--force", *tokenizer_flags(exp), "--workers", exp.jobs,
                        "--corpus", f"books={exp.derived['corpus_path']}"],
             out / "logs" / "corpus.log", out / "logs" / "corpus.done", env)


def stage_glue(exp, env):
    """The supervised tasks binarized with the pre-training dictionary -> OUT/glue."""
    s, out = exp.settings, exp.out
    dict_path, tokenizer = vocabulary_files(exp)
    cmd = [sys.executable, REPO / "scripts" / "prepare_glue.py",
           "--glue-dir", Path(exp.data_root) / "glue",
           *(["--tokenizer-from", exp.derived["init"]["dir"]] if exp.derived.get("init") else
             ["--spm-model", tokenizer, "--dict", dict_path]),
           "--destdir", out / "glue", "--force",
           "--tasks", ",".join(exp.derived["supervised_tasks"]), "--workers", exp.jobs]
    if s["glue_max_rows"]:
        cmd += ["--max-rows", s["glue_max_rows"]]
    run_step("glue", cmd, out / "logs" / "glue.log", out / "logs" / "glue.done", env)
