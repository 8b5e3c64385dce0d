"""What every command-line script in ``scripts/`` shares: one-line errors,
progress lines with the program's name, and the exit status.

A script is thin: it builds its argparse parser, then hands ``main`` to
:func:`run`, which turns a :class:`~fairseq_meta.errors.MetaConfigError` into
``prog: error: message`` on stderr and exit status 2 (argparse's own status for
bad input), with no traceback.

A script's work runs in child processes it does not wait out: ``evaluate --jobs N``
runs units in a process pool, ``reproduce_verdict`` runs fairseq-train and the
fine-tuning runs as subprocesses. A ``kill PID`` reaches only the script, and
without help those children outlive it (a pool worker finishes its unit, then
sleeps forever; a fairseq-train keeps writing into a run directory that a
resumed script starts a second trainer in). :func:`run` therefore stops the
whole process tree on SIGTERM or SIGINT before it exits.
"""
import signal
import sys
import threading
import time

from ..errors import MetaConfigError


class Cli:
    """Logging and failing for one program, named as its users call it."""

    _lock = threading.Lock()  # steps run in threads; print() writes text and newline apart

    def __init__(self, prog):
        self.prog = prog

    def log(self, message):
        with self._lock:
            print(f"[{self.prog}] {time.strftime('%H:%M:%S')} {message}", flush=True)

    @staticmethod
    def fail(message):
        raise MetaConfigError(message)


def stop_descendants(grace_s=10.0):
    """SIGTERM every process below this one, then SIGKILL what is left after *grace_s*.

    The tree is frozen first (SIGSTOP, re-listed until no new process appears) so that a
    child forking at the wrong moment cannot leave a grandchild that is never signalled.
    Returns the processes signalled."""
    import psutil

    def ours(p):
        # multiprocessing's resource tracker ignores SIGTERM by design and exits by itself,
        # reclaiming what its clients leaked, once they are gone
        try:
            return "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
        except psutil.Error:
            return False

    def running(p):  # a zombie has ended: an init that does not reap would keep it forever
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    me, frozen = psutil.Process(), []
    while True:
        new = [p for p in me.children(recursive=True) if p not in frozen and ours(p)]
        if not new:
            break
        for p in new:
            try:
                p.suspend()
            except psutil.NoSuchProcess:
                pass
        frozen += new
    for p in frozen:
        try:
            p.terminate()
            p.resume()  # a stopped process takes its SIGTERM only once continued
        except psutil.NoSuchProcess:
            pass
    alive, deadline = frozen, time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if running(p)]
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return frozen


class Terminated(SystemExit):
    """SIGTERM, raised by :func:`run`'s handler once the process tree is stopped; exits
    with 128 + 15. ``note``: a line :func:`run` prints first (what to do next)."""

    def __init__(self, code=128 + signal.SIGTERM, note=None):
        super().__init__(code)
        self.note = note


def _stop_tree_and_exit(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
    stop_descendants()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(128 + signum)


def run(prog, main, argv=None):
    """``sys.exit(main(argv))``, with bad input reported as one line, and SIGTERM or
    SIGINT stopping every child process before the exit (status 128 + signal number)."""
    # A signal the caller ignores (nohup, a background job of a non-interactive shell)
    # stays ignored; only default handling is replaced.
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    before = {s: signal.getsignal(s) for s in defaults}
    for s, default in defaults.items():
        if before[s] is default:
            signal.signal(s, _stop_tree_and_exit)
    try:
        code = main(argv)
    except MetaConfigError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        code = 2
    except Terminated as e:
        if e.note:
            sys.stderr.write(f"{prog}: {e.note}\n")
        code = e.code
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    sys.exit(code or 0)
