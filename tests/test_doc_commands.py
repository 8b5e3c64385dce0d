"""Every command shown in README.md and docs/ parses with the real parser of the
program it calls: fairseq-train's (with the plugin's options), hydra's composition
of fairseq's config for fairseq-hydra-train, and each script's own argparse parser
(``fairseq_meta.commands.NAME.build_argparser``). A renamed flag, a removed script
or a config key that no longer exists fails here. Commands that only set up a shell
(``source``, ``cat``, ``pip install``, variable assignments) are recognised and left
alone; anything else fails, so a new kind of command needs a check here.

The commands that are run as written, not just parsed: ``bash scripts/pretrain.sh``
(tests/test_pretrain_script.py), ``bash scripts/test.sh`` (CI), ``reproduce_verdict.py
--quick`` (tests/test_reproduce_verdict.py), ``evaluate.py --quick``
(tests/test_evaluate.py).
"""
import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO, USER_DIR

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A shell variable in a shown command stands for a path the reader has.
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
# ... except these, which stand for numbers or for nothing (pretrain.sh's own command).
VALUES = {"MAX_UPDATE": "100", "WARMUP": "10", "EVERY": "20", "EXTRA_ARGS": "", "NODE_RANK": "0", "RANK": "0"}
# Scripts of earlier designs that docs/results.md quotes with the commit that has them.
RETIRED = {"scripts/reproduce.py": "0db0149"}
SHELL_ONLY = {"source", "cat", "pip", "git", "cd", "export"}


def shown_commands():
    """(doc name, command line) for every command in a bash block, continuation
    lines joined, comments dropped."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            for line in block.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append((doc.name, line))
    return out


COMMANDS = shown_commands()


def words(line):
    line = line.replace("$(which fairseq-train)", "fairseq-train")
    line = re.sub(r"\[[^\]]*\]", "", line)  # [--optional N] of a synopsis line
    line = VARIABLE.sub(lambda m: VALUES.get(m[1], f"/x/{m[1].lower()}"), line)
    tokens = shlex.split(line, comments=True)
    # leading VAR=value assignments (OMP_NUM_THREADS=1 python ...)
    while tokens and re.match(r"^\w+=", tokens[0]):
        tokens.pop(0)
    return [t for t in tokens if t != "..."]


def fairseq_train_args(tokens):
    """The arguments of fairseq-train, also under torchrun / srun."""
    i = tokens.index("fairseq-train")
    return tokens[i + 1:]


def check_fairseq_train(args):
    from fairseq import options

    import fairseq_meta  # noqa: F401  (registers the plugin, as --user-dir does)

    args = [USER_DIR if a in ("fairseq_meta", "/x/repo/fairseq_meta") else a for a in args]
    if "--user-dir" not in args:
        raise AssertionError("a fairseq-train command without --user-dir fairseq_meta")
    # parse_args_and_arch exits on an unknown flag; turn that into a failure here
    try:
        options.parse_args_and_arch(options.get_training_parser(), args)
    except SystemExit as e:
        raise AssertionError(f"fairseq-train does not accept: {' '.join(args)}") from e


def config_keys(group, config):
    """The keys fairseq's config accepts under *group*, for the ``_name`` the yaml
    *config* gives it (a registered dataclass, or a legacy model's argparse options)."""
    import dataclasses

    from fairseq import models, optim, tasks
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.optim.lr_scheduler import LR_SCHEDULER_DATACLASS_REGISTRY

    import fairseq_meta  # noqa: F401

    fields = {f.name: f for f in dataclasses.fields(FairseqConfig)}
    assert group in fields, f"{group} is not a group of fairseq's config"
    registries = {"task": tasks.TASK_DATACLASS_REGISTRY, "criterion": CRITERION_DATACLASS_REGISTRY,
                  "optimizer": optim.OPTIMIZER_DATACLASS_REGISTRY,
                  "lr_scheduler": LR_SCHEDULER_DATACLASS_REGISTRY,
                  "model": models.MODEL_DATACLASS_REGISTRY}
    if group in registries:
        name = config[group]["_name"]
        if name in registries[group]:
            return {f.name for f in dataclasses.fields(registries[group][name])}
        assert group == "model", f"{group} {name} is not registered"
        parser = argparse.ArgumentParser()
        models.MODEL_REGISTRY[name].add_args(parser)
        return {a.dest for a in parser._actions}
    return {f.name for f in dataclasses.fields(fields[group].default)}


def check_hydra(args):
    """fairseq-hydra-train's arguments: the config exists, and every override names a
    key of fairseq's config schema for that config's task, model, ... ."""
    import yaml

    parser = argparse.ArgumentParser()
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--config-name", required=True)
    known, overrides = parser.parse_known_args(args)
    path = (REPO / known.config_dir / f"{known.config_name}.yaml")
    assert path.is_file(), f"no config {path}"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for override in overrides:
        key, sep, _ = override.lstrip("+").partition("=")
        assert sep, f"not a hydra override: {override}"
        group, _, name = key.partition(".")
        if group == "hydra":
            continue
        assert name in config_keys(group, config), f"{key} is not a key of fairseq's config"


def check_script(tokens):
    path = tokens[0]
    if path in RETIRED:
        results = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
        assert RETIRED[path] in results, f"{path} is retired; the docs must name its commit"
        return
    assert (REPO / path).is_file(), f"{path} does not exist"
    if path.endswith(".py"):
        module = importlib.import_module(f"fairseq_meta.commands.{Path(path).stem}")
        parser = module.build_argparser()
        args = tokens[1:]
        if "--" in args:  # finetune_glue.py passes what follows "--" to hydra
            args = args[:args.index("--")]
        try:
            parser.parse_args(args)
        except SystemExit as e:
            raise AssertionError(f"{path} does not accept: {' '.join(args)}") from e


def check(line):
    tokens = words(line)
    if not tokens or tokens[0] in SHELL_ONLY:
        return "shell"
    if "fairseq-train" in tokens:
        args = fairseq_train_args(tokens)
        if "..." in line:  # elided: the flags shown must still exist
            args += [] if "--arch" in args else ["--arch", "roberta_base"]
            args += [] if "--user-dir" in args else ["--user-dir", "fairseq_meta"]
        check_fairseq_train(args)
        return "fairseq-train"
    if tokens[0] == "fairseq-hydra-train":
        check_hydra(tokens[1:])
        return "fairseq-hydra-train"
    if tokens[0] in ("python", "python3", "bash"):
        rest = tokens[1:]
        if rest[:2] == ["-m", "pytest"]:
            assert all((REPO / a.split("::")[0]).exists() for a in rest[2:] if a.startswith("tests/"))
            return "pytest"
        check_script(rest)
        return "script"
    raise AssertionError(f"no check for this kind of command: {line}")


@pytest.mark.parametrize("doc,line", COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(COMMANDS)])
def test_shown_command_parses(doc, line):
    check(line)


def test_every_kind_of_command_is_checked():
    kinds = {_kind(line) for _, line in COMMANDS}
    assert {"fairseq-train", "fairseq-hydra-train", "script"} <= kinds


def _kind(line):
    tokens = words(line)
    if not tokens or tokens[0] in SHELL_ONLY:
        return "shell"
    if "fairseq-train" in tokens:
        return "fairseq-train"
    return "fairseq-hydra-train" if tokens[0] == "fairseq-hydra-train" else "script"


@pytest.mark.parametrize("line", [
    "fairseq-train DATA --user-dir fairseq_meta --task meta_masked_lm --meta-train-step 2",
    "fairseq-train DATA --user-dir fairseq_meta --task meta_masked_lm --inner-lr",
    "python scripts/prepare_corpus.py --no-such-flag 8000 x.txt",
    "python scripts/no_such_script.py --help",
    "fairseq-hydra-train --config-dir configs/finetune --config-name rte model.no_such_key=1",
    "fairseq-hydra-train --config-dir configs/finetune --config-name nope task.data=x",
    "rm -rf runs",
])
def test_a_wrong_command_fails_the_check(line):
    with pytest.raises(Exception):
        check(line)
