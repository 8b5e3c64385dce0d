import logging

import numpy as np
from fairseq.data import BaseWrapperDataset

from ..errors import MetaConfigError

logger = logging.getLogger(__name__)


class CompleteBatchesDataset(BaseWrapperDataset):
    """A split evaluated whole: fairseq's mini-batches plus the one it drops.

    ``fairseq.data.data_utils.batch_by_size`` drops the last mini-batch when its
    size is not a multiple of ``--required-batch-size-multiple`` (39 blocks in
    mini-batches of 16 with the default multiple 8 give 16 + 16: 7 are never
    validated; 3 blocks give no mini-batch at all, and fairseq stops with "The
    dataset is empty"). Here that mini-batch is kept, as it was formed (within
    ``--batch-size-valid`` / ``--max-tokens-valid``), so validation sees every
    example. Training is not wrapped: its batches stay fairseq's own.
    """

    def __init__(self, dataset, split):
        super().__init__(dataset)
        self.split = split

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        batches = list(
            self.dataset.batch_by_size(
                indices,
                max_tokens=max_tokens,
                max_sentences=max_sentences,
                required_batch_size_multiple=required_batch_size_multiple,
            )
        )
        indices = np.asarray(indices, dtype=np.int64)
        covered = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        dropped = indices[~np.isin(indices, covered)]
        if len(dropped):
            batches.append(dropped)
        if not batches:
            raise MetaConfigError(
                f"the '{self.split}' split has no example to validate on (after "
                "--skip-invalid-size-inputs-valid-test, if given): validation needs at "
                "least 1; add data to it or pass --disable-validation"
            )
        logger.info(
            "%s: %d examples in %d mini-batches", self.split, len(indices), len(batches)
        )
        return batches
