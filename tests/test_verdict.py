"""scripts/verdict.py and fairseq_meta/evaluation/verdict.py: paired by
pre-training seed, against a computation by hand with numpy and scipy."""
import json

import numpy as np
import pytest
from conftest import run_script
from scipy import stats as scipy_stats

from fairseq_meta.errors import MetaConfigError
from fairseq_meta.evaluation import verdict

# checkpoint -> per-evaluation-seed numbers (bits); k1 better than k0 by about 0.02
RAW = {
    "s1-k0": [8.00, 8.02, 8.01], "s1-k1": [7.98, 7.99, 7.99],
    "s2-k0": [8.05, 8.04, 8.06], "s2-k1": [8.01, 8.02, 8.03],
    "s3-k0": [7.97, 7.99, 7.98], "s3-k1": [7.97, 7.96, 7.98],
}


def write_results(path, labels):
    raw = {label: {"t=64": {str(i + 1): v for i, v in enumerate(RAW[label])},
                   "t=0": {"1": 10.0}} for label in labels}
    path.write_text(json.dumps({"measurements": {"adaptation": {"raw": raw}}}))
    return path


def test_paired_by_pretraining_seed_matches_a_hand_computation(tmp_path):
    # two files, as the sweep and the verdict runs write them
    a = write_results(tmp_path / "a.json", ["s1-k0", "s1-k1"])
    b = write_results(tmp_path / "b.json", ["s2-k0", "s2-k1", "s3-k0", "s3-k1"])
    scores = verdict.checkpoint_scores(verdict.load_raw([a, b], "adaptation"), "t=64")
    got = verdict.compare(scores, "s{seed}-k1", "s{seed}-k0", ["1", "2", "3"])

    diffs = np.array([np.mean(RAW[f"s{s}-k1"]) - np.mean(RAW[f"s{s}-k0"]) for s in (1, 2, 3)])
    sd = diffs.std(ddof=1)
    half = scipy_stats.t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert got["n"] == 3 and got["seeds"] == ["1", "2", "3"]
    assert got["mean"] == pytest.approx(diffs.mean(), abs=1e-12)
    assert got["std"] == pytest.approx(sd, abs=1e-12)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half), abs=1e-12)
    # power at the MDE is 80% (noncentral t with 2 degrees of freedom)
    delta = got["mde"] / sd * np.sqrt(3)
    crit = scipy_stats.t.ppf(0.975, 2)
    power = scipy_stats.nct.sf(crit, 2, delta) + scipy_stats.nct.cdf(-crit, 2, delta)
    assert power == pytest.approx(0.8, abs=1e-3)
    rows = verdict.table({"k1 vs k0": got}, "bits")
    assert rows[0].endswith("| treatment lower |")
    assert rows[2].startswith("| k1 vs k0 | 1, 2, 3 | ") and "| 3/3 |" in rows[2]


def test_the_table_counts_the_seeds_where_the_treatment_is_better_in_the_measurement_s_direction():
    """Bits: lower is better; GLUE points: higher. A tie counts for neither."""
    c = verdict.compare({"s1-k1": 60.0, "s1-k0": 58.0, "s2-k1": 55.0, "s2-k0": 57.0,
                         "s3-k1": 50.0, "s3-k0": 50.0}, "s{seed}-k1", "s{seed}-k0", ["1", "2", "3"])
    higher = verdict.table({"c": c}, "points", "higher")
    assert higher[0].endswith("| treatment higher |") and higher[2].endswith("| 1/3 |")
    assert verdict.table({"c": c}, "bits")[2].endswith("| 1/3 |")
    c["treatment_scores"]["2"] = 56.0  # still below its baseline: one lower, one higher
    c["treatment_scores"]["3"] = 49.0
    assert verdict.table({"c": c}, "points", "higher")[2].endswith("| 1/3 |")
    assert verdict.table({"c": c}, "bits", "lower")[2].endswith("| 2/3 |")
    with pytest.raises(ValueError, match="'lower' or 'higher'"):
        verdict.table({"c": c}, "points", "better")


def test_bad_input_is_one_error(tmp_path):
    a = write_results(tmp_path / "a.json", ["s1-k0", "s1-k1"])
    scores = verdict.checkpoint_scores(verdict.load_raw([a], "adaptation"), "t=64")
    with pytest.raises(MetaConfigError, match="s2-k1, s2-k0"):
        verdict.compare(scores, "s{seed}-k1", "s{seed}-k0", ["1", "2"])
    with pytest.raises(MetaConfigError, match="no per-seed 'probe' numbers"):
        verdict.load_raw([a], "probe")
    with pytest.raises(MetaConfigError, match="no column 't=99'"):
        verdict.checkpoint_scores(verdict.load_raw([a], "adaptation"), "t=99")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MetaConfigError, match="not a readable results.json"):
        verdict.load_raw([tmp_path / "bad.json"], "adaptation")


def test_fewshot_size_is_read_from_its_block(tmp_path):
    by_n = {n: {"raw": {label: {"average": {"1": v + int(n), "2": v + int(n) + 2}} for label, v in
                        (("s1-k0", 40.0), ("s1-k1", 41.0))}} for n in ("32", "128")}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"measurements": {"fewshot": {"by_n": by_n}}}))
    scores = verdict.checkpoint_scores(verdict.load_raw([path], "fewshot-128"), "average")
    assert scores == {"s1-k0": 169.0, "s1-k1": 170.0}
    assert verdict.checkpoint_scores(verdict.load_raw([path], "fewshot-32"), "average")["s1-k0"] == 73.0
    with pytest.raises(MetaConfigError, match="no per-seed 'fewshot-64' numbers"):
        verdict.load_raw([path], "fewshot-64")
    with pytest.raises(MetaConfigError, match="no per-seed 'fewshot' numbers"):
        verdict.load_raw([path], "fewshot")  # the block holds sizes, not seeds


def test_the_probe_is_read_as_one_score_per_checkpoint(tmp_path):
    """evaluate's probe block holds one deterministic score per checkpoint and column
    (no seeds): --measurement probe pairs those by pre-training seed, in points."""
    score = {"s1-k0": 50.0, "s1-k1": 52.5, "s2-k0": 48.0, "s2-k1": 47.0, "s3-k0": 51.0, "s3-k1": 53.0}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"measurements": {"probe": {
        "score": {label: {"RTE": v, "average": v + 1} for label, v in score.items()}, "summary": {}}}}))
    assert verdict.checkpoint_scores(verdict.load_raw([path], "probe"), "average") == {
        label: v + 1 for label, v in score.items()}
    proc = run_script("verdict.py", "--results", path, "--measurement", "probe", "--column", "RTE",
                      "--compare", "k1=s{seed}-k1:s{seed}-k0", "--seeds", "1,2,3", "--json", tmp_path / "v.json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads((tmp_path / "v.json").read_text())["comparisons"]["k1"]
    diffs = np.array([2.5, -1.0, 2.0])
    assert got["mean"] == pytest.approx(diffs.mean()) and got["std"] == pytest.approx(diffs.std(ddof=1))
    assert "treatment higher |" in proc.stdout and "| 2/3 |" in proc.stdout


def test_cli(tmp_path):
    a = write_results(tmp_path / "a.json", list(RAW))
    proc = run_script("verdict.py", "--results", a, "--compare", "t=64: k1=s{seed}-k1:s{seed}-k0",
                      "--seeds", "1,2,3", "--json", tmp_path / "v.json")
    assert proc.returncode == 0, proc.stderr
    assert "| t=64: k1 | 1, 2, 3 |" in proc.stdout
    assert "treatment lower |" in proc.stdout and "] bits |" in proc.stdout  # adaptation: bits, lower is better
    assert json.loads((tmp_path / "v.json").read_text())["comparisons"]["t=64: k1"]["n"] == 3
    proc = run_script("verdict.py", "--results", a, "--compare", "k1=s1-k1:s1-k0", "--seeds", "1,2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "verdict: error: --compare 'k1=s1-k1:s1-k0': expected NAME=TREATMENT:BASELINE with {seed} in both"]
