import logging

import numpy as np
from fairseq.data import BaseWrapperDataset

from ..errors import MetaConfigError

logger = logging.getLogger(__name__)


class EpisodeDataset(BaseWrapperDataset):
    """Groups the mini-batches of a dataset into episodes of ``episode_size``.

    ``batch_by_size`` asks the wrapped dataset for its ordinary mini-batches
    (``--max-tokens`` / ``--batch-size`` size *one* mini-batch) and joins every
    ``episode_size`` consecutive ones into one "batch" of the epoch iterator, so
    that fairseq's shuffling, sharding across ranks, ``--update-freq`` and
    checkpointed iterator positions all count episodes. Mini-batches partition
    the indices, so the k+1 mini-batches of an episode are disjoint. Leftover
    mini-batches (fewer than ``episode_size``) at the end of an epoch are skipped.

    To let ``collater`` split an episode back into mini-batches, the j-th
    mini-batch's indices are encoded as ``j * len(dataset) + index``.
    ``collater`` returns ``{"meta_train": [B_1..B_k], "meta_test": B_q}``, each
    collated by the wrapped dataset exactly as it would be without episodes; with
    ``episode_size == 1`` the mini-batches and their order are those of the plain
    dataset. With ``meta_test=False`` (Reptile) no mini-batch is held back:
    ``{"meta_train": [B_1..B_k], "meta_test": None}`` with k = ``episode_size``.
    """

    def __init__(self, dataset, episode_size, meta_test=True):
        super().__init__(dataset)
        if episode_size < 1:
            raise MetaConfigError(f"an episode needs at least one mini-batch (got {episode_size})")
        self.episode_size = episode_size
        self.meta_test = meta_test

    @property
    def supports_prefetch(self):
        # prefetch() would receive encoded indices (j * len + index); none of the
        # wrapped masked-LM / sentence-prediction pipelines prefetches anyway.
        return False

    def __getitem__(self, index):
        position, index = divmod(int(index), len(self.dataset))
        return position, self.dataset[index]

    def collater(self, samples):
        if len(samples) == 0:
            return {}
        minibatches = [[] for _ in range(self.episode_size)]
        for position, sample in samples:
            minibatches[position].append(sample)
        collated = [self.dataset.collater(mb) for mb in minibatches]
        if not self.meta_test:
            return {"meta_train": collated, "meta_test": None}
        return {"meta_train": collated[:-1], "meta_test": collated[-1]}

    def _composition(self):
        if self.meta_test:
            return f"--meta-train-steps {self.episode_size - 1} + 1 meta-test"
        return f"--meta-train-steps {self.episode_size}, --meta-objective reptile"

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        minibatches = self.dataset.batch_by_size(
            indices,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
        )
        k1 = self.episode_size
        num_episodes = len(minibatches) // k1
        if num_episodes == 0:
            raise MetaConfigError(
                f"cannot form one episode: the data gives {len(minibatches)} mini-batch(es), "
                f"an episode needs {k1} ({self._composition()}); "
                "use more data or a smaller --batch-size/--max-tokens"
            )
        if len(minibatches) % k1:
            logger.info(
                "episodes of %d mini-batches: %d episodes, %d leftover mini-batch(es) skipped",
                k1, num_episodes, len(minibatches) % k1,
            )
        n = len(self.dataset)
        return [
            np.concatenate(
                [np.asarray(minibatches[e * k1 + j], dtype=np.int64) + j * n for j in range(k1)]
            )
            for e in range(num_episodes)
        ]
