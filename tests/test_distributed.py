"""Data parallel on CPU (gloo, legacy_ddp): each rank adapts on its own episode
with no communication; only the meta-test gradient (Reptile: the pseudo-gradient)
is all-reduced, once per update.

- replicas stay bit-identical after N updates;
- 2 ranks × 1 episode equal 1 process × --update-freq 2 over the same episodes
  (fp32 tolerance: the all-reduce sums in another order).
"""
import socket
import subprocess
import sys

import torch
from conftest import HANG_GUARD_S, META, REPO, TINY_ROBERTA, TRAIN_DEFAULTS, cli_env

DRIVER = REPO / "tests" / "helpers" / "train_and_dump_weights.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common(data, k, extra=()):
    return [str(data), *TRAIN_DEFAULTS, *TINY_ROBERTA, *META, "--meta-train-steps", str(k),
            "--inner-lr", "0.05", "--dropout", "0", "--attention-dropout", "0",
            "--max-update", "4", "--seed", "3", "--disable-validation", *extra]


def run_two_ranks(data, save_dir, k, extra=()):
    port = free_port()
    procs = []
    for rank in range(2):
        args = common(data, k, extra) + [
            "--save-dir", str(save_dir), "--ddp-backend", "legacy_ddp",
            "--distributed-world-size", "2", "--distributed-rank", str(rank),
            "--distributed-init-method", f"tcp://127.0.0.1:{port}",
            "--distributed-backend", "gloo", "--distributed-no-spawn",
        ]
        procs.append(subprocess.Popen([sys.executable, str(DRIVER), *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=cli_env()))
    outs = [p.communicate(timeout=HANG_GUARD_S)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return [torch.load(save_dir / f"weights-rank{r}.pt") for r in range(2)]


# id: (k, flags). Reptile and the learned α also all-reduce what they add (the
# pseudo-gradient; ∂L/∂log α with its weight).
SETTINGS = {
    "k1-first": (1, ["--meta-order", "first"]),
    "k1-second": (1, ["--meta-order", "second"]),
    "k1-first-learned-tensor": (1, ["--inner-lr-learned", "tensor"]),
    "k2-reptile-learned-tensor": (2, ["--meta-objective", "reptile", "--inner-lr-learned", "tensor"]),
}


def test_two_ranks_stay_identical_and_match_update_freq_two(corpus, tmp_path):
    for setting, (k, flags) in SETTINGS.items():
        ranks = run_two_ranks(corpus, tmp_path / f"ddp-{setting}", k, flags)
        for name in ranks[0]:
            assert torch.equal(ranks[0][name], ranks[1][name]), f"{setting}: replicas diverged: {name}"

        single_dir = tmp_path / f"single-{setting}"
        proc = subprocess.run(
            [sys.executable, str(DRIVER), *common(corpus, k, flags),
             "--save-dir", str(single_dir), "--update-freq", "2"],
            capture_output=True, text=True, timeout=HANG_GUARD_S, env=cli_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        single = torch.load(single_dir / "weights-rank0.pt")
        for name in single:
            torch.testing.assert_close(ranks[0][name], single[name], rtol=1e-5, atol=1e-6,
                                       msg=f"{setting}: {name}")


def test_c10d_two_ranks_stay_identical(corpus, tmp_path):
    """The pytorch_ddp (c10d) code path on CPU: fairseq's ModuleProxyWrapper around
    torch's DistributedDataParallel, two gloo ranks, each adapting on its own
    episode. Inner steps must not communicate: each update all-reduces exactly as
    often as one ordinary backward; the meta-gradients reduced in that backward
    keep the replicas identical. (fairseq's own
    c10d wrapper passes device_ids=[0] and cannot run on CPU.)"""
    for order in ("first", "second", "reptile"):
        out = tmp_path / order
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, str(REPO / "tests" / "helpers" / "c10d_meta_step.py"), str(corpus),
             str(out), order, str(free_port())],
            capture_output=True, text=True, timeout=HANG_GUARD_S, env=cli_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
        # Only the meta-test backward communicates: each update all-reduces
        # exactly as often as one ordinary backward does.
        per_backward, *per_update = r0.pop("_reductions").tolist()
        direct = r0.pop("_direct").tolist()
        r1.pop("_reductions"), r1.pop("_direct")
        if order == "reptile":
            # No forward through DDP, so its reducer never runs; one all-reduce of
            # the pseudo-gradient per update instead.
            assert per_update == [0] * 3 and direct == [1] * 3, (per_update, direct)
        else:
            assert per_backward > 0 and per_update == [per_backward] * 3, (per_backward, per_update)
            # every all-reduce is one of DDP's bucket reductions (the comm hook's own call)
            assert direct == per_update, (direct, per_update)
        for name in r0:
            assert torch.equal(r0[name], r1[name]), f"{order}: replicas diverged at {name}"
