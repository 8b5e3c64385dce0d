"""A small English corpus that every machine with Python has: the standard
library's docstrings (``scripts/stdlib_corpus.py``, the default pre-training text
of ``scripts/pretrain.sh``).

The docstrings are read by *parsing* the standard library's source files with
:mod:`ast`; no module is ever imported (``antigravity``, ``this`` and friends
have side effects). Every docstring (module, class, function) with enough words
of prose is one document, one paragraph per line; doctest examples (``>>>`` and
their output), indented code blocks and other code-like lines are dropped;
identical docstrings are kept once. Files are visited in sorted path order, so
the output is deterministic for a given Python installation.
"""
import ast
import os
import re
import tokenize
import warnings

from ..errors import MetaConfigError

# Directories that hold tests, tools or third-party code rather than library docs.
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages",
             "dist-packages", "__pycache__"}
# Lines that look like source code rather than prose.
_CODE_LINE = re.compile(
    r"""^(?:
        >>>|\.\.\.(?:\s|$)|\$\s|%\s|         # prompts
        (?:def|class|import|return|raise|yield|print)\b.*[(:=]|
        from\s+\S+\s+import\b|
        (?:if|elif|for|while|with|try|except)\b.*:$|
        else:$|finally:$|
        @[\w.]+(?:\(|$)|                      # decorators
        [\w.\[\]'"]+\s*[-+*/|&]?=\s*\S         # assignments
    )""",
    re.VERBOSE,
)


def iter_source_files(root):
    """Yield the ``.py`` files under ``root`` in sorted order, skipping SKIP_DIRS."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def iter_docstrings(path):
    """Yield the cleaned docstrings of a module and its classes and functions.

    Files that cannot be read or parsed are skipped silently.
    """
    try:
        with tokenize.open(path) as f:  # honours PEP 263 coding cookies
            source = f.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences
            tree = ast.parse(source, filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _is_code_line(line):
    stripped = line.strip()
    if _CODE_LINE.match(stripped):
        return True
    letters = sum(c.isalpha() for c in stripped)
    return letters < 0.5 * len(stripped.replace(" ", ""))


def docstring_to_paragraphs(doc):
    """Turn a cleaned docstring into a list of one-line prose paragraphs."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", doc):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        # A block containing a doctest prompt is an example (input and output).
        if any(ln.lstrip().startswith(">>>") for ln in lines):
            continue
        # After cleaning, prose starts in column 0; a block that is indented
        # as a whole is a literal block (code, grammar, a table).
        base = len(lines[0]) - len(lines[0].lstrip())
        if base > 0:
            continue
        # Inside a prose block, keep hanging-indent items (e.g. "Args:" and
        # its entries) but not deeply indented or code-like lines.
        kept = []
        for ln in lines:
            indent = len(ln) - len(ln.lstrip())
            if indent > base + 8:
                continue
            if _is_code_line(ln):
                continue
            kept.append(ln.strip())
        text = " ".join(" ".join(kept).split())
        # Drop what is left of a paragraph when it has (almost) no words.
        if len(text.split()) >= 3:
            paragraphs.append(text)
    return paragraphs


def stdlib_documents(root, min_words=20, max_docs=None):
    """(documents, files read): the docstrings under ``root`` with at least
    ``min_words`` words of prose, as lists of one-line paragraphs."""
    seen = set()
    documents = []
    n_files = 0
    for path in iter_source_files(root):
        n_files += 1
        for doc in iter_docstrings(path):
            paragraphs = docstring_to_paragraphs(doc)
            if sum(len(p.split()) for p in paragraphs) < min_words:
                continue
            key = "\n".join(paragraphs)
            if key in seen:
                continue
            seen.add(key)
            documents.append(paragraphs)
            if max_docs and len(documents) >= max_docs:
                break
        if max_docs and len(documents) >= max_docs:
            break
    if not documents:
        raise MetaConfigError(f"no docstrings with >= {min_words} words found under {root}")
    return documents, n_files
