"""Episodes: k+1 disjoint mini-batches, each sized by --batch-size/--max-tokens,
in an order fixed by the seed; k = 0 serves masked_lm's batches unchanged."""
import pytest
from conftest import META, TINY_ROBERTA
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_meta.errors import MetaConfigError


def make_cfg(data, *args):
    parser = options.get_training_parser()
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(
        parser, [str(data), *TINY_ROBERTA, "--tokens-per-sample", "32", "--cpu", *args]))


def make_task(data, *args):
    task = tasks.setup_task(make_cfg(data, *args).task)
    task.load_dataset("train", combine=False, epoch=1)
    return task


def episodes(task, seed=1, epoch=1, **batching):
    itr = task.get_batch_iterator(task.dataset("train"), seed=seed, epoch=epoch,
                                  disable_iterator_cache=True, **batching)
    return list(itr.next_epoch_itr(shuffle=True))


def ids(batch):
    return batch["id"].tolist()


def test_episode_holds_k_plus_one_disjoint_minibatches(corpus):
    task = make_task(corpus, *META, "--meta-train-steps", "2")
    eps = episodes(task, max_sentences=3)
    seen = []
    for ep in eps:
        minibatches = ep["meta_train"] + [ep["meta_test"]]
        assert len(minibatches) == 3
        assert all(len(ids(b)) == 3 for b in minibatches)
        flat = [i for b in minibatches for i in ids(b)]
        assert len(set(flat)) == len(flat)
        seen += flat
    assert len(set(seen)) == len(seen)  # and disjoint across the epoch
    n = len(task.dataset("train"))
    assert len(seen) >= n - 3 * 3  # at most k+1 leftover mini-batches are skipped


def test_max_tokens_sizes_one_minibatch(corpus):
    task = make_task(corpus, *META, "--meta-train-steps", "1")
    for ep in episodes(task, max_tokens=100):
        for b in ep["meta_train"] + [ep["meta_test"]]:
            assert b["net_input"]["src_tokens"].numel() <= 100


def test_required_batch_size_multiple_applies_to_each_minibatch(corpus):
    task = make_task(corpus, *META, "--meta-train-steps", "1")
    sizes = [len(ids(b)) for ep in episodes(task, max_sentences=7, required_batch_size_multiple=3)
             for b in ep["meta_train"] + [ep["meta_test"]]]
    assert sizes.count(6) >= len(sizes) - 1  # the data's last mini-batch may be short


def test_order_is_deterministic_for_a_seed(corpus):
    task = make_task(corpus, *META, "--meta-train-steps", "1")
    first = [ids(ep["meta_test"]) for ep in episodes(task, seed=5, max_sentences=4)]
    again = [ids(ep["meta_test"]) for ep in episodes(task, seed=5, max_sentences=4)]
    other = [ids(ep["meta_test"]) for ep in episodes(task, seed=6, max_sentences=4)]
    assert first == again
    assert first != other


def test_depth_zero_serves_masked_lm_batches(corpus):
    plain = make_task(corpus, "--task", "masked_lm")
    meta = make_task(corpus, *META, "--meta-train-steps", "0")
    plain_batches = episodes(plain, max_sentences=4)
    meta_episodes = episodes(meta, max_sentences=4)
    assert [ep["meta_train"] for ep in meta_episodes] == [[]] * len(meta_episodes)
    assert [ids(b) for b in plain_batches] == [ids(ep["meta_test"]) for ep in meta_episodes]
    for b, ep in zip(plain_batches[:5], meta_episodes):
        assert b["net_input"]["src_tokens"].equal(ep["meta_test"]["net_input"]["src_tokens"])
        assert b["target"].equal(ep["meta_test"]["target"])


def test_validation_stays_plain_batches(corpus):
    task = make_task(corpus, *META, "--meta-train-steps", "2")
    task.load_dataset("valid", combine=False, epoch=1)
    batch = next(iter(task.get_batch_iterator(task.dataset("valid"), max_sentences=4).next_epoch_itr()))
    assert "net_input" in batch and "meta_train" not in batch


def test_too_little_data_for_one_episode_is_an_error(corpus):
    task = make_task(corpus, *META, "--meta-train-steps", "100000")
    with pytest.raises(MetaConfigError, match="cannot form one episode"):
        episodes(task, max_sentences=4)


def validated_examples(data, *args):
    """How many examples fairseq's trainer feeds to valid_step, and the split's size."""
    from fairseq.trainer import Trainer

    cfg = make_cfg(data, *args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid", combine=False, epoch=1)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    seen = 0
    for sample in trainer.get_valid_iterator("valid").next_epoch_itr(shuffle=False):
        trainer.valid_step(sample)
        seen += len(sample["id"])
    return seen, len(task.dataset("valid"))


@pytest.mark.parametrize("k", [0, 2])
def test_validation_covers_every_block(corpus, k):
    """The demo's settings (--batch-size 16, --required-batch-size-multiple 8 by
    default): fairseq's batching drops the last mini-batch when its size is not a
    multiple of 8; validation must still see every block."""
    batching = ["--batch-size", "16"]
    plain_seen, blocks = validated_examples(corpus, "--task", "masked_lm", *batching)
    assert blocks % 16 % 8 != 0 and plain_seen < blocks  # the loss the test guards against
    seen, meta_blocks = validated_examples(corpus, *META, "--meta-train-steps", str(k), *batching)
    assert meta_blocks == blocks
    assert seen == blocks


def test_a_split_smaller_than_the_batch_multiple_is_validated(tmp_path, corpus, wiki_lines):
    from conftest import binarize

    data = binarize(tmp_path / "tiny_valid", wiki_lines[:600], wiki_lines[600:603],
                    srcdict=corpus / "dict.txt")
    seen, blocks = validated_examples(data, *META, "--batch-size", "16")
    assert 0 < blocks < 8 and seen == blocks
