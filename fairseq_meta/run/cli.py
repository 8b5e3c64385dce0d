"""What every command-line script in ``scripts/`` shares: one-line errors,
progress lines with the program's name, and the exit status.

A script is thin: it builds its argparse parser, then hands ``main`` to
:func:`run`, which turns a :class:`~fairseq_meta.errors.MetaConfigError` into
``prog: error: message`` on stderr and exit status 2 (argparse's own status for
bad input), with no traceback.
"""
import sys
import time

from ..errors import MetaConfigError


class Cli:
    """Logging and failing for one program, named as its users call it."""

    def __init__(self, prog):
        self.prog = prog

    def log(self, message):
        print(f"[{self.prog}] {time.strftime('%H:%M:%S')} {message}", flush=True)

    @staticmethod
    def fail(message):
        raise MetaConfigError(message)


def run(prog, main, argv=None):
    """``sys.exit(main(argv))``, with bad input reported as one line."""
    try:
        code = main(argv)
    except MetaConfigError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        code = 2
    sys.exit(code or 0)
