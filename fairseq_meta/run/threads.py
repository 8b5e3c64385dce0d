"""How many intra-op threads a training process gets: one policy for every script
that trains (``scripts/pretrain.sh``, ``scripts/reproduce_verdict.py``, ``scripts/benchmark.py``).

1. ``OMP_NUM_THREADS`` set in the environment wins, always.
2. Jobs run side by side (``jobs > 1``): one thread each. Several processes with
   several threads each on the same cores contend, and a run slows by more than
   the count of extra threads (measured on a 2-core machine: 60 updates took 17 s
   with one thread, 71 s with torch's default of two while one other process was
   busy).
3. One job: the cores that are idle now — the CPU count less the 1-minute load
   average, rounded, at least 1. On an idle machine that is every core (torch's
   own default); on a shared one it leaves the busy cores alone.

The count goes to the training process as ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` (torch reads them at start-up), and every run states it in its
header together with the reason.
"""
import os

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def intra_op_threads(jobs=1, environ=None, cpus=None, load=None):
    """(threads per job, why) under the policy above."""
    environ = os.environ if environ is None else environ
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given:
        if given.isdigit() and int(given) > 0:
            return int(given), "OMP_NUM_THREADS is set"
        # torch would ignore it with a warning; say so now instead
        from ..errors import MetaConfigError

        raise MetaConfigError(f"OMP_NUM_THREADS must be a positive integer (got '{given}')")
    if jobs > 1:
        return 1, f"{jobs} jobs side by side, one thread each"
    cpus = cpu_count() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    idle = max(1, min(cpus, cpus - round(load)))
    return idle, (f"{cpus} CPUs, 1-minute load {load:.1f}: one per idle core; "
                  "OMP_NUM_THREADS overrides")


def thread_env(threads, environ=None):
    """A copy of the environment in which torch starts with ``threads`` threads."""
    env = dict(os.environ if environ is None else environ)
    for name in ENV_VARS:
        env[name] = str(threads)
    return env
