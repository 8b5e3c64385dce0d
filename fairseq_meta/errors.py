"""The plugin's one error type for bad input, and how the command line shows it."""
import sys


class MetaConfigError(ValueError):
    """Bad input found before training starts (flag values, data layout).

    A ``ValueError`` for programmatic callers; on the command line
    :func:`install_one_line_errors` prints it as a single line, the way argparse
    reports a bad flag, instead of a traceback.
    """


def _one_line_excepthook(previous):
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, MetaConfigError):
            prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "fairseq"
            sys.stderr.write(f"{prog}: error: {exc}\n")
            return
        previous(exc_type, exc, tb)

    hook._fairseq_meta = True
    return hook


def install_one_line_errors():
    """Print an uncaught :class:`MetaConfigError` as ``prog: error: message``.

    Every other exception still goes to the previous hook untouched. The exit
    status stays 1, as for any uncaught exception.
    """
    if not getattr(sys.excepthook, "_fairseq_meta", False):
        sys.excepthook = _one_line_excepthook(sys.excepthook)
