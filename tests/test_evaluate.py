"""scripts/evaluate.py and fairseq_meta/evaluation: the statistics against known
answers, the probe and the few-shot draws against computations by hand on a tiny
model, in-process fine-tuning against fairseq-hydra-train, the one-line errors for
bad input (nothing written), and the whole CLI end to end in --quick mode with
resume."""
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats as sstats

from conftest import HANG_GUARD_S, META, REPO, SHARED_DATA, cli_env, spm_binarize, train
from fairseq_meta.prep import glue
from fairseq_meta.errors import MetaConfigError
from fairseq_meta.evaluation import Settings, evaluate, glue_runs, probe, runner, stats, verdict
from fairseq_meta.evaluation.model import inspect, load_encoder, make_untrained

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]
SCRIPT = REPO / "scripts" / "evaluate.py"


# --------------------------------------------------------------------------- #
# Statistics against known answers
# --------------------------------------------------------------------------- #
def test_summary_known_answer():
    s = stats.summary([1, 2, 3, 4, 5, float("nan")])
    assert s["n"] == 5 and s["mean"] == 3.0
    assert s["std"] == pytest.approx(math.sqrt(2.5))
    assert s["se"] == pytest.approx(math.sqrt(0.5))
    # t_{0.975, 4} = 2.776445 (tables)
    assert s["ci_high"] - 3.0 == pytest.approx(2.776445 * math.sqrt(0.5), abs=1e-6)
    assert s["ci_low"] == pytest.approx(3.0 - 1.963243, abs=1e-6)
    one = stats.summary([7.0])
    assert one["mean"] == 7.0 and one["std"] is None and one["ci_low"] is None
    assert stats.summary([])["mean"] is None
    # equal values with a float residue (t = 0 of adaptation): no spread, no separation
    same = [0.1 + 0.2, 0.3, 0.3, 0.1 + 0.2, 0.3]  # 0.30000000000000004 and 0.3
    assert len(set(same)) == 2
    assert stats.summary(same)["std"] == 0.0
    assert stats.paired({str(i): v for i, v in enumerate(same)},
                        {str(i): 0.0 for i in range(5)})["separation"] is None


def test_paired_differences():
    a = {"1": 10.0, "2": 12.0, "3": 11.0, "4": 99.0}
    b = {"1": 9.0, "2": 10.0, "3": 11.0, "5": 0.0}
    p = stats.paired(a, b)
    assert p["seeds"] == ["1", "2", "3"]  # only seeds both have
    assert p["mean"] == pytest.approx(1.0) and p["std"] == pytest.approx(1.0)
    assert p["wins"] == 2
    assert p["separation"] == pytest.approx(1.0 / (1.0 / math.sqrt(3)))
    assert p["mde"] == pytest.approx(stats.minimum_detectable_effect(1.0, 3))


@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_minimum_detectable_effect(n):
    sd = 2.5
    mde = stats.minimum_detectable_effect(sd, n)
    # independent: scipy's noncentral t gives power 0.80 at the detectable effect
    df, crit = n - 1, sstats.t.ppf(0.975, n - 1)
    nc = mde / sd * math.sqrt(n)
    assert sstats.nct.sf(crit, df, nc) + sstats.nct.cdf(-crit, df, nc) == pytest.approx(0.8, abs=1e-6)
    # larger than the normal approximation, which it approaches
    assert mde > 2.8016 * sd / math.sqrt(n)


@pytest.mark.parametrize("sd,effect", [(1.0, 0.5), (25.0, 1.0), (3.0, 2.0)])
def test_pairs_for_effect(sd, effect):
    n = stats.pairs_for_effect(sd, effect)

    def power(n):  # independent: scipy's noncentral t at the target effect
        crit, nc = sstats.t.ppf(0.975, n - 1), effect / sd * math.sqrt(n)
        return sstats.nct.sf(crit, n - 1, nc) + sstats.nct.cdf(-crit, n - 1, nc)

    # the fewest pairs with power 0.80: one fewer falls short
    assert power(n) >= 0.8 - 1e-9 and power(n - 1) < 0.8
    # the comparison's own numbers carry it
    values = {s: v for s, v in enumerate(np.random.RandomState(0).normal(0, sd, 8))}
    p = stats.paired(values, {s: 0.0 for s in values}, target=effect)
    assert p["target"] == effect and p["n_for_target"] == stats.pairs_for_effect(p["std"], effect)


def test_pairs_for_effect_known_answers():
    # G*Power, paired t, two-tailed 0.05, power 0.80: d = 0.5 needs 34 pairs, d = 0.2 199
    assert stats.pairs_for_effect(1.0, 0.5) == 34
    assert stats.pairs_for_effect(1.0, 0.2) == 199
    assert stats.pairs_for_effect(0.0, 1.0) == 2
    assert stats.pairs_for_effect(None, 1.0) is None
    assert stats.pairs_for_effect(1.0, 1e-4, max_n=1000) is None


def test_minimum_detectable_effect_known_answers():
    # G*Power, one-sample/paired t, two-tailed 0.05, power 0.80, n = 10: d = 0.996
    assert stats.minimum_detectable_effect(1.0, 10) == pytest.approx(0.996, abs=1e-3)
    # large n: (z_0.975 + z_0.8) sd / sqrt(n)
    assert stats.minimum_detectable_effect(1.0, 10000) == pytest.approx(2.80158 / 100, rel=1e-3)
    assert stats.normal_mde(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert stats.minimum_detectable_effect(0.0, 5) == 0.0
    assert stats.minimum_detectable_effect(1.0, 1) is None
    # two pairs: t_{0.975, 1} = 12.706 makes the detectable effect large (11.55 sd)
    assert stats.minimum_detectable_effect(1.0, 2) == pytest.approx(11.55, abs=0.01)
    # a simulation: paired differences with mean = MDE are significant 80% of the time
    rng = np.random.RandomState(0)
    n, mde = 5, stats.minimum_detectable_effect(1.0, 5)
    d = rng.randn(40000, n) + mde
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > sstats.t.ppf(0.975, n - 1)) == pytest.approx(0.8, abs=0.01)


# --------------------------------------------------------------------------- #
# A tiny model and tiny GLUE
# --------------------------------------------------------------------------- #
def _run(*args, timeout=HANG_GUARD_S):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), cwd=REPO)


@pytest.fixture(scope="module")
def spm_corpus(tmp_path_factory, book_lines):
    root = tmp_path_factory.mktemp("ev_corpus")
    return spm_binarize(root, book_lines)


@pytest.fixture(scope="module")
def checkpoints(spm_corpus, tmp_path_factory):
    save = tmp_path_factory.mktemp("ev_pre")
    train(spm_corpus, save, *META, "--meta-train-steps", "0", "--max-update", "4")
    untrained = make_untrained(save / "checkpoint_last.pt", save / "untrained.pt")
    return untrained, save / "checkpoint_last.pt"


def _pairs(path, lines, labels, header, rows=60, offset=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for i in range(rows):
            j = 2 * i + offset
            f.write(f"{i}\t{lines[j]}\t{lines[j + 1]}\t{labels[i % len(labels)]}\n")


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory, wiki_lines):
    """RTE and STS-B: the shared GLUE files, or rows of the same layout cut from text."""
    root = tmp_path_factory.mktemp("ev_glue")
    lines = [ln.replace("\t", " ") for ln in wiki_lines if len(ln.split()) > 3]
    for name, header, labels in [("RTE", "index\tsentence1\tsentence2\tlabel", ["entailment", "not_entailment"]),
                                 ("STS-B", "index\tsentence1\tsentence2\tscore", ["0.5", "3.2", "4.8", "1.0"])]:
        shared = SHARED_DATA / "glue" / name
        if (shared / "train.tsv").exists():
            (root / name).symlink_to(shared, target_is_directory=True)
        else:
            for k, split in enumerate(["train", "dev"]):
                _pairs(root / name / f"{split}.tsv", lines, labels, header, offset=200 * k)
    return root


@pytest.fixture(scope="module")
def prepared(glue_dir, spm_corpus, tmp_path_factory):
    from fairseq_meta.prep import glue_data

    dest = tmp_path_factory.mktemp("ev_prepared")
    tasks, _ = glue_data.select_tasks(str(glue_dir), ["RTE", "STS-B"])
    glue_data.prepare_glue(tasks, str(dest), spm_model=str(spm_corpus / "spm.model"),
                           dict_path=str(spm_corpus / "dict.txt"), max_rows=60, force=True)
    return dest


@pytest.fixture(scope="module")
def domain(tmp_path_factory, wiki_lines):
    root = tmp_path_factory.mktemp("ev_domain")
    (root / "train.txt").write_text("\n".join(wiki_lines[:200]) + "\n", encoding="utf-8")
    (root / "eval.txt").write_text("\n".join(wiki_lines[200:320]) + "\n", encoding="utf-8")
    return root


# --------------------------------------------------------------------------- #
# The probe and the few-shot draws by hand
# --------------------------------------------------------------------------- #
def test_probe_by_hand(checkpoints, prepared):
    from fairseq import tasks
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    ck = inspect(checkpoints[1], "pre")
    model, _ = load_encoder(ck)
    for name in ["RTE", "STS-B"]:
        record = glue.lookup(name)
        got = probe.probe_task(ck, model, prepared / name, record)
        # by hand: one example at a time (no padding), <s> vector ++ token mean
        cfg = glue_runs.run_config(ck, prepared / name, record, 1, max_update=1, max_epoch=1,
                                   lr=1e-5, batch_size=16)
        task = tasks.setup_task(cfg.task)
        feats = {}
        for split in ["train", "valid"]:
            task.load_dataset(split)
            ds = task.dataset(split)
            xs, ys = [], []
            for i in range(len(ds)):
                tokens = ds[i]["net_input.src_tokens"]
                with torch.no_grad():
                    x, _ = model.encoder.extract_features(tokens.unsqueeze(0))
                xs.append(torch.cat([x[0, 0], x[0].mean(0)]).double().numpy())
                ys.append(float(np.asarray(ds[i]["target"]).reshape(-1)[0]))
            feats[split] = (np.stack(xs), np.asarray(ys))
        (tx, ty), (dx, dy) = feats["train"], feats["valid"]
        scaler = StandardScaler().fit(tx)
        if record.regression:
            lin = RidgeCV(alphas=probe.ALPHAS).fit(scaler.transform(tx), ty)
            preds = lin.predict(scaler.transform(dx))
            metrics = glue.compute_metrics(record, preds, dy)
            np.testing.assert_allclose(got["preds"], preds, rtol=1e-4, atol=1e-4)
        else:
            ty, dy = ty.astype(int), dy.astype(int)
            cv = StratifiedKFold(5, shuffle=True, random_state=0)
            lin = LogisticRegressionCV(Cs=probe.CS, cv=cv, max_iter=2000).fit(scaler.transform(tx), ty)
            preds = lin.predict(scaler.transform(dx))
            values = glue_runs.label_values(task, record, cfg.task.num_classes)
            metrics = glue.compute_metrics(record, values[preds], values[dy])
            assert got["preds"] == values[preds].tolist()
            assert got["regularisation"] == float(lin.C_[0])
        assert got["n_train"] == len(ty) and got["n_dev"] == len(dy)
        assert got["score"] == pytest.approx(100 * glue.task_score(record, metrics), abs=1e-2)


def test_fewshot_draws(checkpoints, prepared):
    from fairseq import tasks

    n_total = runner._n_train(prepared / "RTE")
    a = runner.fewshot_indices("RTE", n_total, 16, 1)
    # a function of (task, n, draw) only, by hand
    seed = (__import__("zlib").crc32(b"RTE") + 1009 * 16 + 7919 * 1) % 2 ** 32
    assert a.tolist() == sorted(np.random.RandomState(seed).choice(n_total, 16, replace=False).tolist())
    assert runner.fewshot_indices("RTE", n_total, 16, 2).tolist() != a.tolist()
    assert runner.fewshot_indices("STS-B", n_total, 16, 1).tolist() != a.tolist()
    assert len(set(a.tolist())) == 16 and runner.fewshot_indices("RTE", n_total, 10 ** 6, 1).tolist() == list(range(n_total))

    # training reads exactly the drawn examples, each once per epoch
    ck = inspect(checkpoints[1], "pre")
    record = glue.lookup("RTE")
    cfg = glue_runs.run_config(ck, prepared / "RTE", record, 3, max_update=1, max_epoch=1, lr=1e-5,
                               batch_size=4)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    full = task.dataset("train")
    sub = glue_runs.IndexSubset(full, a)
    seen = []
    itr = task.get_batch_iterator(sub, max_sentences=4, seed=3).next_epoch_itr(shuffle=True)
    for batch in itr:
        seen.extend(batch["id"].tolist())
    assert sorted(seen) == a.tolist()  # ids are the examples' indices in the full split
    for i in range(16):
        assert torch.equal(sub[i]["net_input.src_tokens"], full[int(a[i])]["net_input.src_tokens"])

    # the run's schedule: max(min_updates, epochs x ceil(n / batch))
    res = glue_runs.finetune_run(ck, prepared / "RTE", record, 1, epochs=2, lr=1e-4, batch_size=4,
                                 min_updates=3, train_indices=a)
    assert res["n_train"] == 16 and res["updates"] == 8


def test_inprocess_finetuning_is_fairseq_hydra_train(checkpoints, prepared, tmp_path):
    """Same config, same seed: the weights after in-process training equal those of
    fairseq-hydra-train with configs/finetune/rte.yaml, bit for bit."""
    ck = inspect(checkpoints[1], "pre")
    record = glue.lookup("RTE")
    # One intra-op thread on both sides (cli_env gives the subprocess one): float
    # sums reduce in the same order only with the same thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = glue_runs.finetune_run(ck, prepared / "RTE", record, 2, epochs=1, lr=1e-4,
                                     batch_size=8, keep_model=True)
    finally:
        torch.set_num_threads(threads)
    cfg = glue_runs.run_config(ck, prepared / "RTE", record, 2, max_update=res["updates"], max_epoch=1,
                               lr=1e-4, batch_size=8)
    overrides = glue_runs.run_overrides(ck, prepared / "RTE", 2, max_update=res["updates"], max_epoch=1,
                                        lr=1e-4, batch_size=8)
    overrides = [o for o in overrides if not o.startswith(("checkpoint.no_save", "common.log_format"))]
    save = tmp_path / "ck"
    proc = _run("-m", "fairseq_cli.hydra_train", "--config-dir", str(REPO / "configs" / "finetune"),
                "--config-name", "rte", *overrides, f"checkpoint.save_dir={save}",
                f"hydra.run.dir={tmp_path / 'hydra'}", "checkpoint.no_save_optimizer_state=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from fairseq_meta.checkpoints import load_checkpoint

    theirs = load_checkpoint(save / "checkpoint_last.pt")["model"]
    assert cfg.optimization.max_update == res["updates"]
    assert res["model_state"].keys() == theirs.keys()
    differ = [k for k in theirs if not torch.equal(theirs[k], res["model_state"][k])]
    assert not differ, differ[:5]


# --------------------------------------------------------------------------- #
# Bad input: one line, nothing written
# --------------------------------------------------------------------------- #
def _settings(tmp_path, cks, glue, domain, **kw):
    base = dict(checkpoints=[str(c) for c in cks], out_dir=str(tmp_path / "out"),
                glue_dir=str(glue), tasks=["RTE", "STS-B"],
                domain_train=str(domain / "train.txt"), domain_eval=str(domain / "eval.txt"),
                quick=True)
    base.update(kw)
    return Settings(**base)


def test_bad_input(checkpoints, glue_dir, domain, spm_corpus, tmp_path):
    good = checkpoints[1]
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    lm = tmp_path / "lm.pt"
    state = torch.load(good, map_location="cpu", weights_only=False)
    state["cfg"]["model"].arch = "transformer_lm"
    state["cfg"]["model"]._name = "transformer_lm"
    torch.save(state, lm)
    nolabel = tmp_path / "glue_nolabel"
    (nolabel / "RTE").mkdir(parents=True)
    for split in ["train", "dev"]:
        (nolabel / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\n0\ta b\tc d\n")
    other_dict = tmp_path / "dict.txt"
    other_dict.write_text("".join(f"w{i} 1\n" for i in range(40)))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = [
        (dict(checkpoints=[str(text)]), "not a checkpoint"),
        (dict(checkpoints=[str(tmp_path)]), "is a directory"),
        (dict(checkpoints=[str(tmp_path / "missing.pt")]), "not found"),
        (dict(checkpoints=[str(lm)]), "RoBERTa"),
        (dict(glue_dir=str(nolabel), tasks=["RTE"]), "no column 'label'"),
        (dict(dict_path=str(other_dict)), "dictionary mismatch"),
        (dict(domain_eval=str(empty), measurements=["adaptation"]), "is empty"),
        (dict(domain_train=str(tmp_path / "nope.txt"), measurements=["adaptation"]), "not found"),
        (dict(measurements=["vibes"]), "unknown measurement"),
        (dict(target_effect=0.0), "--target-effect must be > 0"),
        (dict(device="gpu"), "--device must be cpu or cuda"),
    ]
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda"), "--device cuda: torch sees no CUDA device"))
    for change, message in cases:
        settings = _settings(tmp_path, [good], glue_dir, domain, **change)
        with pytest.raises(MetaConfigError, match=message) as e:
            evaluate(settings)
        assert "\n" not in str(e.value)
        assert not (tmp_path / "out").exists(), change
    proc = _run(SCRIPT, text, "--out-dir", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("evaluate: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_more_seeds_reuse_the_units_that_exist():
    import dataclasses

    few = Settings(checkpoints=[], out_dir="out", ft_seeds=3, fs_draws=2, ad_seeds=2)
    more = dataclasses.replace(few, ft_seeds=5, fs_draws=9, ad_seeds=7)
    for kind in runner.MEASUREMENTS:
        assert runner._key(few.part(kind)) == runner._key(more.part(kind)), kind
    # what a unit computes with is its key
    for changed, kind in ((dict(ft_lr=1e-5), "finetune"), (dict(fs_epochs=2), "fewshot"),
                          (dict(ad_lr=1e-3), "adaptation"), (dict(glue_max_rows=7), "probe")):
        other = dataclasses.replace(few, **changed)
        assert runner._key(few.part(kind)) != runner._key(other.part(kind)), changed


def test_gpu_units_are_kept_apart_from_cpu_units():
    """A unit computed on the GPU has another key than the same unit on the CPU (the
    scores differ in the last digits); the CPU's keys are those without the option."""
    import dataclasses

    cpu = Settings(checkpoints=[], out_dir="out")
    gpu = dataclasses.replace(cpu, device="cuda")
    for kind in runner.MEASUREMENTS:
        assert "device" not in cpu.part(kind), kind
        assert gpu.part(kind) == {**cpu.part(kind), "device": "cuda"}, kind
        assert runner._key(cpu.part(kind)) != runner._key(gpu.part(kind)), kind


def test_adaptation_block_tokens(checkpoints, glue_dir, domain, tmp_path):
    """--ad-block-tokens: max positions - 1 measures exactly what the default does (and
    the default keeps the keys written before the option); shorter blocks are another
    measurement, with their own units; a length the checkpoints cannot take is refused."""
    import dataclasses

    ck = inspect(checkpoints[1], "pre")
    longest = ck.model["max_positions"] - 1
    base = _settings(tmp_path, [checkpoints[1]], glue_dir, domain, measurements=["adaptation"])
    base.apply_quick()
    same, short = (dataclasses.replace(base, ad_block_tokens=n) for n in (longest, longest // 2))
    assert "ad_block_tokens" not in base.part("adaptation")
    assert runner._key(short.part("adaptation")) != runner._key(base.part("adaptation"))
    unit = {"kind": "adaptation", "seed": 1}
    default, explicit, shorter = (runner.run_unit(s, ck, unit, None) for s in (base, same, short))
    assert default["bits"] == explicit["bits"]
    assert shorter["bits"] != default["bits"] and shorter["train_blocks"] > default["train_blocks"]
    for bad in (0, longest + 1):
        with pytest.raises(MetaConfigError, match=re.escape(f"--ad-block-tokens must be in [1, {longest}]")):
            evaluate(dataclasses.replace(base, ad_block_tokens=bad))
    assert not (tmp_path / "out").exists()


def test_finetuning_device_reaches_fairseq(checkpoints, prepared):
    """--device is fairseq's common.cpu in the fine-tuning config (fp32 on either)."""
    ck = inspect(checkpoints[1], "pre")
    for device, cpu in (("cpu", True), ("cuda", False)):
        cfg = glue_runs.run_config(ck, prepared / "RTE", glue.lookup("RTE"), 1, max_update=1, max_epoch=1,
                                   lr=1e-5, batch_size=8, device=device)
        assert cfg.common.cpu is cpu and cfg.common.fp16 is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_matches_cpu(checkpoints, prepared, glue_dir, domain, tmp_path):
    """On a GPU: the same encoder's dev outputs and masked-LM loss equal the CPU's
    within float tolerance, and a --quick evaluation with --device cuda runs every
    measurement and keeps its units apart from the CPU's."""
    from fairseq import tasks

    from fairseq_meta.evaluation import adaptation
    from fairseq_meta.evaluation.model import load_dictionary, load_tokenizer, read_text_blocks

    ck = inspect(checkpoints[1], "pre")
    cfg = glue_runs.run_config(ck, prepared / "RTE", glue.lookup("RTE"), 1, max_update=1, max_epoch=1,
                               lr=1e-5, batch_size=8)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    model, dictionary = load_encoder(ck)
    head = "check"
    model.register_classification_head(head, num_classes=2)
    blocks, _ = read_text_blocks(domain / "eval.txt", load_tokenizer(ck.tokenizer, ck.dict_path),
                                 load_dictionary(ck.dict_path), ck.model["max_positions"] - 1)
    eval_set = adaptation.make_eval_set(blocks, dictionary, 8)
    on_cpu = glue_runs.predict(model, task, task.dataset("valid"), head)[0], adaptation.evaluate(model, eval_set)
    model.cuda()
    on_gpu = glue_runs.predict(model, task, task.dataset("valid"), head)[0], adaptation.evaluate(model, eval_set)
    np.testing.assert_allclose(on_gpu[0], on_cpu[0], rtol=1e-4, atol=1e-4)
    assert on_gpu[1] == pytest.approx(on_cpu[1], rel=1e-4)

    import dataclasses

    measured = ["fewshot", "probe", "adaptation"]
    settings = _settings(tmp_path, list(checkpoints), glue_dir, domain, device="cuda", measurements=measured)
    report = evaluate(settings)
    assert all(report["measurements"][m] for m in measured)
    assert report["settings"]["device"] == "cuda"
    keys = {p.parent.name for p in (tmp_path / "out" / "units").rglob("*.json")}
    cpu = dataclasses.replace(settings, device="cpu")
    assert keys == {f"{k}-{runner._key(settings.part(k))}" for k in measured}
    assert not keys & {f"{k}-{runner._key(cpu.part(k))}" for k in measured}


# --------------------------------------------------------------------------- #
# The CLI end to end, and resume
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_cli_quick_end_to_end_and_resume(checkpoints, glue_dir, domain, tmp_path):
    out = tmp_path / "eval"
    args = [SCRIPT, f"init={checkpoints[0]}", f"pre={checkpoints[1]}", "--out-dir", out, "--quick",
            "--glue-dir", glue_dir, "--tasks", "RTE,STS-B", "--glue-max-rows", "60",
            "--domain-train", domain / "train.txt", "--domain-eval", domain / "eval.txt"]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert [c["label"] for c in report["checkpoints"]] == ["init", "pre"]
    assert report["checkpoints"][0]["num_updates"] == 0 and report["checkpoints"][1]["num_updates"] == 4
    m = report["measurements"]
    assert set(m) == {"finetune", "fewshot", "probe", "adaptation"}
    # every raw number is there: 2 seeds x 2 tasks, 2 sizes x 2 draws x 2 tasks, 2 adaptation seeds
    for label in ["init", "pre"]:
        assert set(m["finetune"]["raw"][label]) == {"RTE", "STS-B", "average"}
        assert len(m["finetune"]["raw"][label]["RTE"]) == 2
        for n in ["8", "16"]:
            assert len(m["fewshot"]["by_n"][n]["raw"][label]["STS-B"]) == 2
        assert set(m["adaptation"]["raw"][label]) == {"t=0", "t=1", "t=2"}
        assert set(m["probe"]["score"][label]) == {"RTE", "STS-B", "average"}
    # scripts/verdict.py reads the probe as one score per checkpoint and column
    probed = verdict.checkpoint_scores(verdict.load_raw([out / "results.json"], "probe"), "average")
    assert probed == {label: m["probe"]["score"][label]["average"] for label in ["init", "pre"]}
    # the average of a seed is the mean of its tasks; the paired difference is by seed
    ft = m["finetune"]["raw"]
    for s in ["1", "2"]:
        assert ft["pre"]["average"][s] == pytest.approx((ft["pre"]["RTE"][s] + ft["pre"]["STS-B"][s]) / 2)
    diffs = [ft["pre"]["average"][s] - ft["init"]["average"][s] for s in ["1", "2"]]
    assert m["finetune"]["paired_to_first"]["pre"]["average"]["mean"] == pytest.approx(np.mean(diffs))
    # and says how many seeds the default target effect (1 point) would take
    avg = m["finetune"]["paired_to_first"]["pre"]["average"]
    assert avg["target"] == 1.0 and avg["n_for_target"] == stats.pairs_for_effect(avg["std"], 1.0)
    # adaptation at t=0 is the checkpoint itself: the same for every seed
    t0 = m["adaptation"]["raw"]["pre"]["t=0"]
    assert t0["1"] == t0["2"]
    assert report["headline"]["measurement"] == "adaptation"
    assert report["versions"]["torch"] == torch.__version__
    md = (out / "results.md").read_text()
    assert "## Headline: adaptation at t=2" in md and "| pre − init |" in md
    need = avg["n_for_target"]
    assert (f"(≤ 1 at n = {need})" if need else f"(≤ 1: n > {stats.MAX_PAIRS})") in md
    assert "starts from θ, the weights the checkpoint holds" in md
    assert (out / "fewshot.png").stat().st_size > 0 and (out / "adaptation.png").stat().st_size > 0

    # resume: nothing finished is recomputed; a lost unit is the only one run again
    units = sorted(out.glob("units/*/*/*.json"))
    assert len(units) == 2 * (2 * 2 + 2 * 2 * 2 + 2 + 2)
    stamps = {p: p.stat().st_mtime_ns for p in units}
    lost = next(p for p in units if "finetune" in str(p.parent))
    lost.unlink()
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running 1 with" in proc.stdout
    for p, t in stamps.items():
        if p != lost:
            assert p.stat().st_mtime_ns == t
    assert lost.is_file()
    again = json.loads((out / "results.json").read_text())
    assert again["measurements"]["probe"] == report["measurements"]["probe"]


def test_fine_tuning_holds_back_only_fairseq_s_notice_of_dropped_heads(caplog):
    """A checkpoint's heads that the fine-tuned model lacks are dropped by design; fairseq's
    line per weight is held back while the checkpoint loads. A head of the task's own name
    with other dimensions is still reported, and nothing is held back afterwards."""
    import logging

    from fairseq.models.roberta import model as fairseq_roberta

    dropped = ("deleting classification head (CoLA) from checkpoint not present in current model: "
               "classification_heads.CoLA.dense.weight")
    resized = ("deleting classification head (RTE) from checkpoint with different dimensions than "
               "current model: classification_heads.RTE.out_proj.weight")
    with caplog.at_level(logging.WARNING, logger=fairseq_roberta.logger.name):
        with glue_runs._QuietHeadDrops():
            fairseq_roberta.logger.warning(dropped)
            fairseq_roberta.logger.warning(resized)
        fairseq_roberta.logger.warning(dropped)
    assert [r.getMessage() for r in caplog.records] == [resized, dropped]
