"""scripts/benchmark.py runs end to end on a tiny corpus: every configuration is timed
in one process, token counts include the support mini-batches, memory is measured per
configuration, and bad input is one line. (No timing is asserted: see docs/benchmarks.md.)"""
import json
import subprocess
import sys

from conftest import REPO, cli_env

SCRIPT = REPO / "scripts" / "benchmark.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=cli_env(), cwd=REPO, timeout=600)


def test_benchmark_counts_every_token_and_reports_each_configuration(corpus, tmp_path):
    out = tmp_path / "raw.json"
    proc = _run("--data", corpus, "--configs", "k1-first,k2-second", "--rounds", 1,
                "--updates", 2, "--warmup", 1, "--batch-size", 2, "--tokens-per-sample", 32,
                "--json", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads(out.read_text())
    (round_,) = raw["throughput_rounds"]
    configs = ["masked_lm", "k1-first", "k2-second"]  # stock is always added
    assert sorted(round_["tokens"]) == sorted(configs)
    # full 32-token blocks, 2 per mini-batch, 2 timed updates; depth k: k + 1 mini-batches
    assert round_["tokens"]["masked_lm"] == 2 * 2 * 32
    assert round_["tokens"]["k1-first"] == 2 * round_["tokens"]["masked_lm"]
    assert round_["tokens"]["k2-second"] == 3 * round_["tokens"]["masked_lm"]
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
