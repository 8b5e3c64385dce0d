#!/usr/bin/env python3
"""Write a small English corpus made of the Python standard library's docstrings.

Every machine that has Python has this text, so it is the default pre-training
corpus of ``scripts/pretrain.sh`` (no download needed).  The docstrings are
read by *parsing* the standard library's source files with :mod:`ast`; no module
is ever imported (``antigravity``, ``this`` and friends have side effects).

Output layout (the raw-text layout that ``scripts/prepare_corpus.py`` expects):

* every docstring (module, class, function) with at least ``--min-words`` words
  of prose is one *document*;
* one paragraph per line (the wrapped lines of a paragraph are joined);
* a blank line between documents.

Doctest examples (``>>>`` and their output), indented code blocks and other
code-like lines are dropped.  Identical docstrings are written once.  Files are
visited in sorted path order, so the output is deterministic for a given Python
installation.

Example::

    python scripts/stdlib_corpus.py --out runs/corpus/stdlib.txt
"""
import argparse
import ast
import os
import re
import sys
import sysconfig
import tokenize
import warnings

PROG = "stdlib_corpus"
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


def die(message):
    """Exit with a one-line error message naming the program."""
    sys.exit(f"{PROG}: error: {message}")


def _is_stdout(path):
    """Whether ``path`` names the file this process's stdout writes to."""
    try:
        out, fd1 = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (fd1.st_dev, fd1.st_ino)


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


def build_argparser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write the Python standard library's docstrings as a "
        "plain-text corpus: one paragraph per line, a blank line between "
        "documents (one document per docstring). Modules are parsed with ast, "
        "never imported.",
    )
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output text file (parent directories are created); "
                        "'-' writes to stdout (the summary then goes to stderr)")
    parser.add_argument("--max-docs", type=int, default=None, metavar="N",
                        help="stop after N documents (default: all)")
    parser.add_argument("--min-words", type=int, default=20, metavar="N",
                        help="skip docstrings with fewer than N words of prose "
                        "(default: %(default)s)")
    parser.add_argument("--stdlib", default=None, metavar="DIR",
                        help="directory to read instead of this interpreter's "
                        "standard library (sysconfig 'stdlib' path)")
    return parser


def main(argv=None):
    args = build_argparser().parse_args(argv)
    if args.max_docs is not None and args.max_docs < 1:
        die(f"--max-docs must be >= 1 (got {args.max_docs})")
    if args.min_words < 1:
        die(f"--min-words must be >= 1 (got {args.min_words})")
    root = args.stdlib or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        die(f"standard library directory not found: {root}")
    if os.path.isdir(args.out):
        die(f"--out {args.out} is a directory")

    seen = set()
    documents = []
    n_files = 0
    for path in iter_source_files(root):
        n_files += 1
        for doc in iter_docstrings(path):
            paragraphs = docstring_to_paragraphs(doc)
            if sum(len(p.split()) for p in paragraphs) < args.min_words:
                continue
            key = "\n".join(paragraphs)
            if key in seen:
                continue
            seen.add(key)
            documents.append(paragraphs)
            if args.max_docs and len(documents) >= args.max_docs:
                break
        if args.max_docs and len(documents) >= args.max_docs:
            break
    if not documents:
        die(f"no docstrings with >= {args.min_words} words found under {root}")

    text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
    to_stdout = args.out == "-" or _is_stdout(args.out)
    if args.out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    elif os.path.islink(args.out) or (os.path.exists(args.out)
                                      and not os.path.isfile(args.out)):
        # /dev/stdout, a pipe, a symlink: write through it, never replace it.
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        # A regular file: write a temporary file and rename it into place, so
        # an interrupted run leaves no half-written corpus.
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, args.out)

    n_lines = sum(len(doc) for doc in documents)
    n_words = sum(len(p.split()) for doc in documents for p in doc)
    print(f"{PROG}: wrote {len(documents)} documents, {n_lines} lines, "
          f"{n_words} words from {n_files} files under {root} to {args.out}",
          file=sys.stderr if to_stdout else sys.stdout)


if __name__ == "__main__":
    main()
