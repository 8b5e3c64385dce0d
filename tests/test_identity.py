"""k = 0 is ordinary multi-task pre-training: bit for bit fairseq's masked_lm."""
import pytest
from conftest import META, assert_same_weights, model_weights, train


BATCHING = {
    "batch-size": [],
    # fairseq's own batching and update flags keep their meaning through episodes
    "max-tokens+update-freq+clip-norm": ["--max-tokens", "96", "--update-freq", "2",
                                         "--clip-norm", "0.05", "--required-batch-size-multiple", "2"],
}


@pytest.mark.parametrize("batching", BATCHING.values(), ids=BATCHING.keys())
def test_depth_zero_equals_masked_lm_bit_for_bit(corpus, tmp_path, batching):
    updates = ["--max-update", "12", "--seed", "7", "--dropout", "0.1", *batching]
    train(corpus, tmp_path / "plain", "--task", "masked_lm", "--criterion", "masked_lm",
          "--optimizer", "adam", *updates)
    train(corpus, tmp_path / "meta", *META, "--meta-train-steps", "0", *updates)

    plain = model_weights(tmp_path / "plain" / "checkpoint_last.pt")
    meta = model_weights(tmp_path / "meta" / "checkpoint_last.pt")
    assert_same_weights(plain, meta)


def test_depth_one_differs_from_masked_lm(corpus, tmp_path):
    """The identity above is not vacuous: with k = 1 the weights do move differently."""
    updates = ["--max-update", "4", "--seed", "7"]
    train(corpus, tmp_path / "plain", "--task", "masked_lm", "--criterion", "masked_lm",
          "--optimizer", "adam", *updates)
    train(corpus, tmp_path / "meta", *META, "--meta-train-steps", "1", "--inner-lr", "0.1", *updates)
    plain = model_weights(tmp_path / "plain" / "checkpoint_last.pt")
    meta = model_weights(tmp_path / "meta" / "checkpoint_last.pt")
    assert any(not (plain[k] == meta[k]).all() for k in plain)
