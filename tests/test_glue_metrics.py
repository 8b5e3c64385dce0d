"""fairseq_meta/prep/glue_metrics.py against scikit-learn and scipy (the references fairseq's
own sentence_prediction criterion uses), on random inputs and degenerate ones."""
import ast
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from conftest import REPO
from fairseq_meta.prep import glue
from fairseq_meta.prep import glue_metrics as gm
from fairseq_meta.errors import MetaConfigError

PATH = REPO / "fairseq_meta" / "prep" / "glue_metrics.py"


def test_imports_numpy_only():
    tree = ast.parse(PATH.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"math", "numpy"}, imported


def _rng(seed):
    return np.random.default_rng(seed)


def _close(a, b, tol=1e-12):
    if math.isnan(b):
        return math.isnan(a)
    return abs(a - b) <= tol


# --- classification ---------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_random_classification_metrics_match_sklearn(seed):
    rng = _rng(seed)
    n = int(rng.integers(1, 300))
    k = int(rng.integers(2, 5))
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    assert _close(gm.accuracy(p, y), skm.accuracy_score(y, p))
    assert _close(gm.matthews_corrcoef(p, y), skm.matthews_corrcoef(y, p), 1e-10)
    yb, pb = y % 2, p % 2
    assert _close(gm.f1(pb, yb), skm.f1_score(yb, pb, zero_division=0.0))
    assert isinstance(gm.accuracy(p, y), float)


@pytest.mark.parametrize("p, y", [
    ([1, 1, 1, 1], [0, 1, 0, 1]),      # constant prediction
    ([0, 0, 0, 0], [0, 1, 0, 1]),      # constant prediction, no positive predicted
    ([0, 1, 0, 1], [1, 1, 1, 1]),      # constant labels
    ([0, 0, 0], [0, 0, 0]),            # all negative, all right: F1 is 0/0
    ([1, 1, 1], [1, 1, 1]),            # all positive, all right
    ([1, 0, 1, 0], [0, 1, 0, 1]),      # all wrong: MCC -1
    ([1, 0, 1, 0], [1, 0, 1, 0]),      # all right: MCC 1
    ([1], [0]),                        # one example
    ([2, 2, 0], [0, 1, 2]),            # three classes
])
def test_degenerate_classification_inputs_match_sklearn(p, y):
    p, y = np.array(p), np.array(y)
    assert _close(gm.accuracy(p, y), skm.accuracy_score(y, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _close(gm.matthews_corrcoef(p, y), skm.matthews_corrcoef(y, p), 1e-12)
    if set(p) | set(y) <= {0, 1}:
        assert _close(gm.f1(p, y), skm.f1_score(y, p, zero_division=0.0, labels=[0, 1]))


def test_constant_predictions_give_mcc_zero():
    y = _rng(0).integers(0, 2, 50)
    assert gm.matthews_corrcoef(np.ones(50, int), y) == 0.0
    assert gm.matthews_corrcoef(np.zeros(50, int), y) == 0.0


def test_f1_positive_class_is_one_not_the_first_label():
    # Label 1 is rare here; F1 of class 1, not a macro or class-0 score.
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 0])
    assert gm.f1(p, y) == pytest.approx(0.5)
    assert gm.f1(p, y, positive=0) == pytest.approx(skm.f1_score(y, p, pos_label=0))


def test_string_labels_work_for_accuracy_and_mcc():
    y = np.array(["a", "b", "b", "c", "a"])
    p = np.array(["a", "b", "c", "c", "b"])
    assert _close(gm.accuracy(p, y), skm.accuracy_score(y, p))
    assert _close(gm.matthews_corrcoef(p, y), skm.matthews_corrcoef(y, p), 1e-12)


# --- regression --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_random_correlations_match_scipy(seed):
    rng = _rng(100 + seed)
    n = int(rng.integers(3, 300))
    y = rng.normal(size=n) * 2 + 1
    p = 0.7 * y + rng.normal(size=n)
    if seed % 2:  # STS-B style: scores on a coarse grid, many ties on both sides
        y = np.round(rng.uniform(0, 5, n) * 5) / 5
        p = np.round((y + rng.normal(size=n)) * 2) / 2
    assert _close(gm.pearson(p, y), stats.pearsonr(p, y)[0], 1e-10)
    assert _close(gm.spearman(p, y), stats.spearmanr(p, y)[0], 1e-10)


def test_rankdata_averages_ties_like_scipy():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    np.testing.assert_array_equal(gm.rankdata(x), stats.rankdata(x))
    assert gm.rankdata([7, 7, 7]).tolist() == [2.0, 2.0, 2.0]


def test_spearman_with_heavy_ties():
    p = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3, 4], dtype=float)
    y = np.array([0, 1, 0, 1, 1, 2, 2, 1, 3, 3], dtype=float)
    assert _close(gm.spearman(p, y), stats.spearmanr(p, y)[0], 1e-12)


def test_perfect_and_reversed_correlation():
    y = np.arange(10.0)
    assert gm.pearson(2 * y + 3, y) == pytest.approx(1.0)
    assert gm.spearman(np.exp(y), y) == pytest.approx(1.0)
    assert gm.pearson(-y, y) == pytest.approx(-1.0)
    assert gm.spearman(-y ** 3, y) == pytest.approx(-1.0)


def test_constant_input_gives_nan_correlation_like_scipy():
    y = np.arange(5.0)
    c = np.full(5, 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(stats.pearsonr(c, y)[0]) and math.isnan(stats.spearmanr(c, y)[0])
    assert math.isnan(gm.pearson(c, y))
    assert math.isnan(gm.spearman(c, y))
    assert math.isnan(gm.pearson(y, c))


def test_length_mismatch_and_empty_inputs_are_errors():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        gm.accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no examples"):
        gm.pearson([], [])


# --- task table (fairseq_meta/prep/glue.py) -----------------------------------------

def test_metrics_by_task():
    metrics = {name: task.metrics for name, task in glue.GLUE_TASKS.items()}
    assert metrics["CoLA"] == ("mcc",)
    assert metrics["MRPC"] == metrics["QQP"] == ("f1", "accuracy")
    assert metrics["STS-B"] == ("pearson", "spearman")
    for task in ["SST-2", "MNLI", "QNLI", "RTE", "WNLI"]:
        assert metrics[task] == ("accuracy",)
    assert [t.name for t in glue.GLUE_TASKS.values() if t.regression] == ["STS-B"]
    assert [t.name for t in glue.GLUE_TASKS.values() if t.single_sentence] == ["CoLA", "SST-2"]
    assert {t.config for t in glue.GLUE_TASKS.values()} >= {
        p.stem for p in (REPO / "configs" / "finetune").glob("*.yaml")}


@pytest.mark.parametrize("alias, name", [
    ("sst_2", "SST-2"), ("SST2", "SST-2"), ("sts-b", "STS-B"), ("cola", "CoLA"), ("MNLI", "MNLI"),
])
def test_task_names(alias, name):
    assert glue.lookup(alias).name == name


def test_unknown_task():
    with pytest.raises(MetaConfigError, match="unknown GLUE task 'SQuAD'"):
        glue.lookup("SQuAD")


def test_task_score_is_the_mean_of_the_tasks_metrics():
    assert glue.task_score("MRPC", {"f1": 80.0, "accuracy": 70.0, "n": 5}) == 75.0
    assert glue.task_score("sts-b", {"pearson": 0.5, "spearman": 0.7}) == pytest.approx(0.6)
    assert glue.task_score("CoLA", {"mcc": 30.0, "accuracy": 99.0}) == 30.0
    assert math.isnan(glue.task_score("RTE", {"f1": 1.0}))
    assert math.isnan(glue.task_score("STS-B", {"pearson": float("nan"), "spearman": 1.0}))


def test_padding_labels_are_filtered(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("entailment 3\nnot_entailment 2\nmadeupword0000 0\nmadeupword0001 0\n")
    assert glue.read_label_dict(path) == ["entailment", "not_entailment"]
    assert glue.real_labels(["0", "1", "madeupword0002", "madeupwords"]) == ["0", "1", "madeupwords"]


def test_task_record_round_trips_through_json_and_rejects_bad_fields():
    import json

    for task in glue.GLUE_TASKS.values():
        assert glue.task_from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(MetaConfigError, match="unknown field 'colums'"):
        glue.task_from_dict({"name": "X", "inputs": ["a"], "label": "l", "colums": 3})
    with pytest.raises(MetaConfigError, match="unknown metric 'auc'"):
        glue.task_from_dict({"name": "X", "inputs": ["a"], "label": "l", "metrics": ["auc"]})


def test_compute_metrics():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([1, 0, 0, 1, 1, 0])
    out = glue.compute_metrics("MRPC", p, y)
    assert list(out) == ["f1", "accuracy"]
    assert out["f1"] == pytest.approx(skm.f1_score(y, p))
    assert out["accuracy"] == pytest.approx(4 / 6)
    out = glue.compute_metrics("sts_b", p + 0.5 * y, y)
    assert out["pearson"] == pytest.approx(stats.pearsonr(p + 0.5 * y, y)[0])
