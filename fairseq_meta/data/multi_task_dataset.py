import numpy as np
from fairseq.data import FairseqDataset, data_utils


class MultiTaskDataset(FairseqDataset):
    """Examples of several labeled tasks in one index space, so that a mini-batch
    mixes tasks.

    Each task keeps its own dataset and collater (fairseq's sentence_prediction
    pipeline); ``collater`` groups a mini-batch by task and returns
    ``{"tasks": {name: batch}}``. With one task the order is that task's own
    (``sentence_prediction``'s shuffle); with several, a seeded shuffle over all
    examples, drawn anew each epoch.
    """

    def __init__(self, datasets, seed):
        super().__init__()
        self.names = list(datasets)
        self.datasets = [datasets[n] for n in self.names]
        self.seed = seed
        self.epoch = 1
        lengths = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])

    def _locate(self, index):
        task = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return task, int(index - self.offsets[task])

    def __getitem__(self, index):
        task, local = self._locate(index)
        return task, self.datasets[task][local]

    def __len__(self):
        return int(self.offsets[-1])

    @property
    def sizes(self):
        # NestedDictionaryDataset keeps a list of size arrays (one per key group)
        return np.concatenate(
            [d.sizes[0] if isinstance(d.sizes, list) else d.sizes for d in self.datasets]
        )

    def num_tokens(self, index):
        task, local = self._locate(index)
        return self.datasets[task].num_tokens(local)

    def size(self, index):
        task, local = self._locate(index)
        return self.datasets[task].size(local)

    def collater(self, samples):
        if len(samples) == 0:
            return {}
        by_task = {}
        for task, sample in samples:
            by_task.setdefault(task, []).append(sample)
        return {
            "tasks": {
                self.names[task]: self.datasets[task].collater(items)
                for task, items in sorted(by_task.items())
            }
        }

    def ordered_indices(self):
        if len(self.datasets) == 1:
            return self.datasets[0].ordered_indices()
        with data_utils.numpy_seed(self.seed, self.epoch):
            return np.random.permutation(len(self))

    @property
    def supports_prefetch(self):
        return False

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return len(self.datasets) == 1 and getattr(
            self.datasets[0], "can_reuse_epoch_itr_across_epochs", True
        )

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.epoch = epoch
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)
