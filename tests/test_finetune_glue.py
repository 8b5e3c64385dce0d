"""scripts/finetune_glue.py end to end on a tiny scale: meta-pre-train a tiny RoBERTa
(k=1, 2 updates) on sentencepiece-encoded text, prepare 40 RTE rows with
scripts/prepare_glue.py, fine-tune it with fairseq-hydra-train and configs/finetune/rte.yaml
(--quick), and score the dev split; plus the one-line errors for bad input, and tasks
outside the shipped configs (WNLI with a user's config) or without train data (QNLI)."""
import csv
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import HANG_GUARD_S, META, REPO, SHARED_DATA, cli_env, spm_binarize, train
from fairseq_meta.run import finetune
from fairseq_meta.errors import MetaConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCRIPT = REPO / "scripts" / "finetune_glue.py"
ROWS = 40


def _run(script, *args, timeout=HANG_GUARD_S):
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=cli_env(), cwd=REPO)


@pytest.fixture(scope="module")
def spm_corpus(tmp_path_factory, wiki_lines):
    """Pre-training data as users make it: sentencepiece + dict.txt (prepare_corpus.py)."""
    root = tmp_path_factory.mktemp("spm_corpus")
    return spm_binarize(root, wiki_lines[:600])


@pytest.fixture(scope="module")
def pretrained(spm_corpus, tmp_path_factory):
    """A tiny meta_masked_lm checkpoint: k=1, 2 updates, 32 positions (TINY_ROBERTA)."""
    save = tmp_path_factory.mktemp("pretrained")
    train(spm_corpus, save, *META, "--meta-train-steps", "1", "--inner-lr", "0.05",
          "--max-update", "2")
    return save / "checkpoint_last.pt"


def _write_pairs(path, lines, labels, offset=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\tsentence1\tsentence2\tlabel\n")
        for i in range(ROWS):
            j = 2 * i + offset
            f.write(f"{i}\t{lines[j]}\t{lines[j + 1]}\t{labels[i % 2]}\n")


def _glue_dir(root, wiki_lines, shared=SHARED_DATA / "glue"):
    """GLUE's RTE tsv files (the shared copy, or RTE-format rows cut from other
    text), plus WNLI-format rows (no config shipped for it) and a QNLI with a dev
    split only, both cut from other text."""
    raw = root / "glue_raw"
    lines = [line.replace("\t", " ") for line in wiki_lines if len(line.split()) > 3]
    for split in ["train", "dev"]:
        if not (shared / "RTE" / "train.tsv").exists():
            _write_pairs(raw / "RTE" / f"{split}.tsv", lines, ["not_entailment", "entailment"])
        _write_pairs(raw / "WNLI" / f"{split}.tsv", lines, ["0", "1"], offset=2 * ROWS)
    if (shared / "RTE" / "train.tsv").exists():
        (raw / "RTE").symlink_to(shared / "RTE", target_is_directory=True)
    qnli = raw / "QNLI" / "dev.tsv"
    _write_pairs(qnli, lines, ["entailment", "not_entailment"], offset=4 * ROWS)
    qnli.write_text(qnli.read_text().replace("sentence1\tsentence2", "question\tsentence", 1))
    return raw


@pytest.fixture(scope="module")
def glue_data(spm_corpus, tmp_path_factory, wiki_lines):
    """DATA/{RTE,WNLI,QNLI} from scripts/prepare_glue.py, first 40 rows of each split."""
    root = tmp_path_factory.mktemp("glue")
    proc = _run(REPO / "scripts" / "prepare_glue.py", "--glue-dir", _glue_dir(root, wiki_lines),
                "--tasks", "RTE,WNLI,QNLI", "--spm-model", spm_corpus / "spm.model",
                "--dict", spm_corpus / "dict.txt", "--destdir", root / "data",
                "--max-rows", ROWS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "data"


@pytest.fixture(scope="module")
def quick_run(pretrained, glue_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    proc = _run(SCRIPT, "--checkpoint", pretrained, "--glue-data", glue_data, "--tasks", "rte",
                "--seeds", "1", "--out-dir", out, "--quick", "--cpu")
    return proc, out


def test_quick_rte_end_to_end(quick_run, pretrained, glue_data):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [1] and results["quick"] is True
    assert results["pretrained_model"]["encoder_embed_dim"] == 32
    assert results["pretrained_model"]["max_positions"] == 32
    rte = results["tasks"]["RTE"]
    assert rte["metrics"] == ["accuracy"]
    valid = rte["splits"]["valid"]
    seed = valid["seeds"]["1"]
    # Percent, as fairseq logs accuracy and GLUE reports it; every dev row was scored
    # (longer pairs are truncated to the 32 positions, not dropped).
    assert 0.0 <= seed["accuracy"] <= 100.0
    assert seed["n_examples"] == ROWS == json.loads((glue_data / "RTE" / "meta.json").read_text())["rows"]["valid"]
    assert seed["num_updates"] == 4
    assert valid["summary"]["accuracy"] == {"mean": seed["accuracy"], "std": 0.0, "n_seeds": 1}

    # Our forward pass over the dev split agrees with fairseq's own validation of
    # the best checkpoint (stored rounded to 0.1).
    run = out / "RTE" / "seed1"
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["fairseq_best"] == pytest.approx(seed["accuracy"], abs=0.051)

    table = (out / "results.md").read_text()
    assert "| task | metric | mean ± std | n seeds | per seed |" in table
    acc = f"{seed['accuracy']:.2f}"
    assert f"| RTE | accuracy | {acc} ± 0.00 | 1 | {acc} |" in table

    # Fine-tuning started from the pre-trained weights, with the checkpoint's shape.
    log = (run / "train.log").read_text()
    assert f"Loaded checkpoint {pretrained}" in log
    command = (run / "command.sh").read_text()
    for override in ["--config-name rte", "model.encoder_layers=2", "model.encoder_embed_dim=32",
                     "model.encoder_ffn_embed_dim=64", "model.encoder_attention_heads=2",
                     "task.max_positions=32", "common.seed=1", "common.cpu=true"]:
        assert override in command
    tuned = torch.load(run / "checkpoints" / "checkpoint_best.pt", map_location="cpu",
                       weights_only=False)
    assert any(k.startswith("classification_heads.sentence_classification_head.")
               for k in tuned["model"])
    assert tuned["cfg"]["task"]["_name"] == "sentence_prediction"
    assert tuned["cfg"]["optimization"]["lr"] == [2e-05]  # the recipe's RTE value
    assert not (run / "checkpoints" / "checkpoint_last.pt").exists()


def test_dry_run_shows_the_commands(pretrained, glue_data, tmp_path, capsys):
    assert finetune.finetune(finetune.Options(
        checkpoint=str(pretrained), glue_data=str(glue_data), tasks=["RTE"], seeds=[1, 2],
        out_dir=str(tmp_path), max_update=100, cpu=True, dry_run=True,
        overrides=["optimization.lr=[3e-05]"])) == 0
    commands = [c for c in capsys.readouterr().out.splitlines() if "fairseq_cli.hydra_train" in c]
    assert len(commands) == 2
    for seed, command in zip([1, 2], commands):
        assert f"common.seed={seed}" in command
        assert f"checkpoint.save_dir={tmp_path}/RTE/seed{seed}/checkpoints" in command
        # 6% warm-up of the shortened schedule; the extra override comes last
        assert "optimization.max_update=100 lr_scheduler.warmup_updates=6" in command
        assert command.endswith("'optimization.lr=[3e-05]'")
    assert not (tmp_path / "RTE").exists()


# --- errors ---------------------------------------------------------------------

def _copy_task(glue_data, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(glue_data / "RTE", dst / "RTE")
    return dst


def _edit_meta(data, **changes):
    path = data / "RTE" / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _args(pretrained, data, tmp_path, *extra, tasks="RTE"):
    return ["--checkpoint", str(pretrained), "--glue-data", str(data), "--tasks", tasks,
            "--out-dir", str(tmp_path / "out"), "--cpu", *extra]


def _options(pretrained, data, tmp_path, *extra, tasks="RTE"):
    overrides = list(extra[1:]) if extra[:1] == ("--",) else list(extra)
    return finetune.Options(checkpoint=str(pretrained), glue_data=str(data),
                            tasks=tasks.split(","), out_dir=str(tmp_path / "out"), cpu=True,
                            overrides=overrides)


@pytest.mark.parametrize("case, message", [
    ("no_task_data", r"no data for MRPC: .*MRPC not found \(make it with scripts/prepare_glue.py\)"),
    ("meta_num_classes", r"RTE: label mismatch: .*meta.json has num_classes=3 .* but rte.yaml has task.num_classes=2"),
    ("meta_regression", r"RTE: label mismatch: .*meta.json says regression but rte.yaml is classification"),
    ("override_num_classes", r"RTE: label mismatch: .*meta.json has num_classes=2 \(entailment, not_entailment\) but rte.yaml has task.num_classes=3"),
    ("label_dict", r"RTE: label mismatch: .*label/dict.txt has 3 labels \(entailment, not_entailment, maybe\) but rte.yaml has task.num_classes=2"),
    ("override_regression", r"RTE: rte.yaml sets regression_target=true but RTE is scored as classification"),
    ("dictionary", r"RTE: dictionary mismatch: the checkpoint's embeddings have \d+ rows but .*input0/dict.txt gives \d+ symbols"),
    ("no_input1", r"RTE \(a sentence-pair task\): .*input1/dict.txt is missing"),
    ("unknown_task", r"unknown GLUE task 'SQuAD'"),
    ("no_checkpoint", r"checkpoint .*missing.pt not found"),
])
def test_bad_input_is_a_one_line_error(case, message, pretrained, glue_data, tmp_path):
    data, extra, tasks, checkpoint = _copy_task(glue_data, tmp_path), [], "RTE", pretrained
    if case == "no_task_data":
        tasks = "RTE,MRPC"
    elif case == "meta_num_classes":
        _edit_meta(data, num_classes=3)
    elif case == "meta_regression":
        _edit_meta(data, regression=True, num_classes=1)
    elif case == "override_num_classes":
        extra = ["--", "task.num_classes=3"]
    elif case == "label_dict":  # without meta.json, label/dict.txt still has to agree
        (data / "RTE" / "meta.json").unlink()
        with open(data / "RTE" / "label" / "dict.txt", "a", encoding="utf-8") as f:
            f.write("maybe 0\n")
    elif case == "override_regression":
        extra = ["--", "criterion.regression_target=true"]
    elif case == "dictionary":
        with open(data / "RTE" / "input0" / "dict.txt", "a", encoding="utf-8") as f:
            f.write("an-extra-symbol 1\n")
    elif case == "no_input1":
        shutil.rmtree(data / "RTE" / "input1")
    elif case == "unknown_task":
        tasks = "RTE,SQuAD"
    elif case == "no_checkpoint":
        checkpoint = tmp_path / "missing.pt"
    with pytest.raises(MetaConfigError, match=message):
        finetune.finetune(_options(checkpoint, data, tmp_path, *extra, tasks=tasks))
    assert not (tmp_path / "out").exists(), "nothing may run or be written before the checks pass"


@pytest.mark.parametrize("case", ["no_checkpoint", "dictionary"])
def test_command_line_prints_one_line(case, pretrained, glue_data, tmp_path):
    data, checkpoint = _copy_task(glue_data, tmp_path), pretrained
    if case == "no_checkpoint":
        checkpoint = tmp_path / "missing.pt"
    else:
        with open(data / "RTE" / "input0" / "dict.txt", "a", encoding="utf-8") as f:
            f.write("an-extra-symbol 1\n")
    proc = _run(SCRIPT, *_args(checkpoint, data, tmp_path))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("finetune_glue.py")]
    assert len(errors) == 1 and errors[0].startswith("finetune_glue.py: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("not found" if case == "no_checkpoint" else "dictionary mismatch") in errors[0]


def test_rte_fallback_without_shared_data(tmp_path, wiki_lines):
    """Without ../shared/data the fixtures cut RTE-format rows from other text."""
    root = _glue_dir(tmp_path, wiki_lines, shared=tmp_path / "absent")
    assert not (root / "RTE").is_symlink()
    for split in ["train", "dev"]:
        with open(root / "RTE" / f"{split}.tsv", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        assert rows[0] == ["index", "sentence1", "sentence2", "label"]
        assert len(rows) == ROWS + 1 and all(len(r) == 4 and r[1] and r[2] for r in rows[1:])
        assert {r[3] for r in rows[1:]} == {"entailment", "not_entailment"}


@pytest.mark.parametrize("ratio, expected", [(122 / 2036, 6), (28318 / 113272, 25)])
def test_shortened_schedule_keeps_the_recipes_warmup_share(ratio, expected, tmp_path):
    """--max-update 100: RTE's recipe warms up for 6% of the updates, fairseq's QQP for 25%."""
    args = finetune.Options(checkpoint="x.pt", glue_data=str(tmp_path), out_dir=str(tmp_path),
                            max_update=100)
    plan = {"dir": tmp_path, "warmup_ratio": ratio}
    overrides = finetune.run_overrides(plan, 1, tmp_path / "run", args, [])
    assert "optimization.max_update=100" in overrides
    assert f"lr_scheduler.warmup_updates={expected}" in overrides


# --- tasks outside configs/finetune, evaluation-only data ------------------------

def _dry_run(pretrained, glue_data, out, log=None, **options):
    return finetune.finetune(finetune.Options(
        checkpoint=str(pretrained), glue_data=str(glue_data), out_dir=str(out), cpu=True,
        dry_run=True, **options), **({"log": log} if log else {}))


def test_a_task_without_shipped_config_runs_with_the_users_config(
        pretrained, glue_data, tmp_path, capsys):
    """WNLI has no configs/finetune/wnli.yaml: with --config-dir holding one it is
    fine-tuned like any task; without --tasks and without its config it is skipped
    and named, and so is QNLI, which has no train split."""
    logged = []
    assert _dry_run(pretrained, glue_data, tmp_path, log=logged.append) == 0
    assert logged == ["skipping QNLI (evaluation data only), WNLI (no wnli.yaml in "
                      f"{finetune.DEFAULT_CONFIG_DIR})"]
    commands = [c for c in capsys.readouterr().out.splitlines() if "hydra_train" in c]
    assert len(commands) == 1 and "--config-name rte" in commands[0]

    with pytest.raises(MetaConfigError, match=r"WNLI: config .*wnli.yaml not found"):
        _dry_run(pretrained, glue_data, tmp_path, tasks=["wnli"])

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "wnli.yaml").write_text(
        (REPO / "configs" / "finetune" / "rte.yaml").read_text(), encoding="utf-8")
    assert _dry_run(pretrained, glue_data, tmp_path / "out", tasks=["WNLI"],
                    config_dir=str(configs)) == 0
    commands = [c for c in capsys.readouterr().out.splitlines() if "hydra_train" in c]
    assert len(commands) == 1
    assert f"--config-dir {configs} --config-name wnli" in commands[0]
    assert f"task.data={glue_data / 'WNLI'}" in commands[0]


def test_evaluation_only_task_is_refused_by_name(pretrained, glue_data, tmp_path):
    meta = json.loads((glue_data / "QNLI" / "meta.json").read_text())
    assert meta["evaluation_only"] is True and meta["rows"] == {"valid": ROWS}
    with pytest.raises(MetaConfigError, match="QNLI: .* evaluation data only"):
        _dry_run(pretrained, glue_data, tmp_path, tasks=["QNLI"])


def test_a_task_outside_the_table_is_known_by_its_meta_json(pretrained, glue_data, tmp_path,
                                                             capsys):
    """prepare_glue.py --task-file writes the task's record into meta.json; fine-tuning
    takes the task's config name and metrics from there."""
    data = tmp_path / "data"
    shutil.copytree(glue_data / "RTE", data / "MyNLI")
    meta = json.loads((data / "MyNLI" / "meta.json").read_text())
    meta["task_record"].update(name="MyNLI", config="rte", metrics=["accuracy"])
    (data / "MyNLI" / "meta.json").write_text(json.dumps(meta))
    assert _dry_run(pretrained, data, tmp_path / "out", tasks=["mynli"]) == 0
    commands = [c for c in capsys.readouterr().out.splitlines() if "hydra_train" in c]
    assert len(commands) == 1 and "--config-name rte" in commands[0]
    assert f"checkpoint.save_dir={tmp_path / 'out' / 'MyNLI' / 'seed1' / 'checkpoints'}" \
        in commands[0]

    del meta["task_record"]
    (data / "MyNLI" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MetaConfigError, match="MyNLI: unknown task"):
        _dry_run(pretrained, data, tmp_path / "out", tasks=["MyNLI"])
