"""The shape of the tree, so that it stays what README's map says.

- The plugin (what ``--user-dir fairseq_meta`` loads: tasks, criterions, optim,
  data, meta_learning, checkpoints, errors, ...) imports nothing from the tool
  sub-packages; checked on the import statements with ``ast`` and on a real
  ``--user-dir`` load in a fresh process.
- scripts/ never touch ``sys.path``; each is one call into fairseq_meta.commands.
- README.md stays a front page (<= 250 lines) and every relative link of README and
  docs/ resolves, anchors included.
"""
import ast
import re
import subprocess
import sys

import pytest
from conftest import REPO

PACKAGE = REPO / "fairseq_meta"
TOOLS = ("prep", "run", "evaluation", "experiments", "commands")


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return parts


def _imported_modules(source, module, is_package=False):
    """Every module that the import statements of *source* name, as dotted absolute
    names, for a module named *module* (a list of parts)."""
    package = module if is_package else module[:-1]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            names.append(".".join(target))
            # "from . import x" may import the submodule x
            names += [".".join(target + [alias.name]) for alias in node.names]
    return names


def _imports_of(path):
    return _imported_modules(path.read_text(encoding="utf-8"), _module_name(path),
                             path.name == "__init__.py")


def _tool_imports(names):
    prefixes = tuple(f"fairseq_meta.{t}" for t in TOOLS)
    return sorted({m for m in names if m in prefixes or m.startswith(tuple(p + "." for p in prefixes))})


def plugin_files():
    return [p for p in PACKAGE.rglob("*.py")
            if p.relative_to(PACKAGE).parts[0] not in TOOLS]


def test_the_plugin_imports_no_tool():
    files = plugin_files()
    assert any(p.name == "meta_learning.py" for p in files)
    offending = {str(p.relative_to(REPO)): _tool_imports(_imports_of(p)) for p in files}
    offending = {k: v for k, v in offending.items() if v}
    assert not offending, f"plugin modules import tools: {offending}"


@pytest.mark.parametrize("source", [
    "from ..prep import glue", "from ..run.cli import Cli", "import fairseq_meta.evaluation.stats",
    "from fairseq_meta import experiments", "from .. import commands",
])
def test_the_import_check_catches_each_spelling(source):
    module = ["fairseq_meta", "tasks", "some_task"]
    assert _tool_imports(_imported_modules(source, module)), source
    assert not _tool_imports(_imported_modules("from ..errors import MetaConfigError\n"
                                               "from ..data import labels", module))


def test_user_dir_load_imports_no_tool():
    """What fairseq-train does with --user-dir, in a fresh process: no tool module
    ends up in sys.modules."""
    code = (
        "import sys\n"
        "from fairseq import utils\n"
        "from argparse import Namespace\n"
        f"utils.import_user_module(Namespace(user_dir={str(PACKAGE)!r}))\n"
        "from fairseq.tasks import TASK_REGISTRY\n"
        "assert 'meta_masked_lm' in TASK_REGISTRY\n"
        f"tools = {TOOLS!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fairseq_meta'"
        " and len(m.split('.')) > 1 and m.split('.')[1] in tools))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_scripts_are_one_call_into_the_package():
    for script in sorted((REPO / "scripts").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        assert "sys.path" not in text, script.name
        tree = ast.parse(text)
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{script.name} defines {[d.name for d in defs]}: move it to fairseq_meta"
        assert f"from fairseq_meta.commands.{script.stem} import PROG, main" in text, script.name


# --------------------------------------------------------------------------- #
# README and docs
# --------------------------------------------------------------------------- #
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading):
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    out, seen, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            a = github_anchor(line.lstrip("#"))
            n = seen.get(a, 0)
            out.add(a if n == 0 else f"{a}-{n}")
            seen[a] = n + 1
    return out


def test_github_anchor_known_answers():
    assert github_anchor(" Set-up: the two commands") == "set-up-the-two-commands"
    assert github_anchor(" Reproducing the verdict: `scripts/reproduce_verdict.py`") == \
        "reproducing-the-verdict-scriptsreproduce_verdictpy"


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"
