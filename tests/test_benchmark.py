"""scripts/benchmark.py runs end to end on a tiny corpus: every configuration is timed
in one process, token counts include the meta-train mini-batches, memory is measured per
configuration, and bad input is one line. (No timing is asserted: see docs/benchmarks.md.)"""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import HANG_GUARD_S, REPO, cli_env
from fairseq_meta.experiments import benchmark
from fairseq_meta.errors import MetaConfigError

SCRIPT = REPO / "scripts" / "benchmark.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=cli_env(), cwd=REPO, timeout=HANG_GUARD_S)


@pytest.mark.slow
def test_benchmark_counts_every_token_and_reports_each_configuration(corpus, tmp_path):
    out = tmp_path / "raw.json"
    proc = _run("--data", corpus, "--configs", "k1-first,k2-second,k2-reptile,k1-first-learned-tensor",
                "--rounds", 1,
                "--updates", 2, "--warmup", 1, "--batch-size", 2, "--tokens-per-sample", 32,
                "--json", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads(out.read_text())
    (round_,) = raw["throughput_rounds"]
    configs = ["masked_lm", "k1-first", "k2-second", "k2-reptile", "k1-first-learned-tensor"]  # stock added
    assert sorted(round_["tokens"]) == sorted(configs)
    # full 32-token blocks, 2 per mini-batch, 2 timed updates; depth k: k + 1 mini-batches
    assert round_["tokens"]["masked_lm"] == 2 * 2 * 32
    assert round_["tokens"]["k1-first"] == 2 * round_["tokens"]["masked_lm"]
    assert round_["tokens"]["k2-second"] == 3 * round_["tokens"]["masked_lm"]
    # Reptile holds no mini-batch back: depth k is k mini-batches
    assert round_["tokens"]["k2-reptile"] == 2 * round_["tokens"]["masked_lm"]
    assert round_["tokens"]["k1-first-learned-tensor"] == 2 * round_["tokens"]["masked_lm"]
    assert all(s > 0 for s in round_["seconds"].values())
    assert sorted(raw["memory"]) == sorted(configs)
    assert all(m["peak_bytes"] > m["param_bytes"] > 0 for m in raw["memory"].values())
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in table[1:]] == configs
    assert table[1].split("|")[4].strip() == "1.000"  # stock against itself


def test_benchmark_bad_input_is_one_line(corpus, tmp_path):
    for args, message in [(["--data", corpus, "--configs", "k7"], "unknown config k7"),
                          (["--data", tmp_path / "none"], "data directory not found"),
                          (["--data", corpus, "--rounds", 0], "--rounds and --updates must be >= 1")]:
        proc = _run(*args)
        assert proc.returncode != 0
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("benchmark: error:") and message in err[0], proc.stderr


def _args(**kw):
    base = dict(data=".", configs="k1-first", rounds=1, updates=2, warmup=0, model="small",
                batch_size=2, tokens_per_sample=32, fp16=False)
    return SimpleNamespace(**{**base, **kw})


def test_stock_masked_lm_is_always_measured_first():
    assert benchmark.check(_args(configs="k2-second, k0")) == ["masked_lm", "k2-second", "k0"]
    with pytest.raises(MetaConfigError, match="unknown config k9 "):
        benchmark.check(_args(configs="k0,k9"))


def test_table_medians_and_ratios():
    rounds = [{"tokens": {"masked_lm": 100, "k1-first": 200}, "updates": 2, "threads": 1,
               "seconds": {"masked_lm": 1.0, "k1-first": s}, "device": "cpu"}
              for s in (4.0, 1.0, 2.0)]
    memory = {"masked_lm": {"peak_bytes": 1000, "param_bytes": 100},
              "k1-first": {"peak_bytes": 1250, "param_bytes": 100}}
    rows = [r for r in benchmark.table(_args(rounds=3), ["masked_lm", "k1-first"], rounds, memory)
            if r.startswith("| ")][1:]
    # k1-first: tokens/s 50, 200, 100 -> median 100; ratio to stock (100 tok/s): 1.000;
    # updates/s 0.5, 2, 1 -> 1; memory (1250 - 1000) / 100 parameter bytes
    assert rows[1] == "| k1-first | 100 | 1.00 | 1.000 | 0 | +2.50 |"
    assert rows[0] == "| masked_lm | 100 | 2.00 | 1.000 | 0 | +0.00 |"
