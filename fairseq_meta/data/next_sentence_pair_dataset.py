"""Sentence-pair data for BERT's next-sentence prediction (NSP) objective."""

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset, TokenBlockDataset, data_utils
from fairseq.data.lru_cache_dataset import LRUCacheDataset

# Mixed into the RandomState seed so NSP pairings do not share a random stream
# with other consumers of the same (seed, epoch), e.g. masking.
_NSP_SEED_SALT = 0x4E5350  # "NSP"

# The classification head that predicts NextSentenceLabelDataset's labels: the
# task registers it on the model, the criterion reads it.
NSP_HEAD = "next_sentence_head"


class NextSentencePairDataset(FairseqDataset):
    """BERT-style sentence pairs for next-sentence prediction.

    ``dataset`` must be a dataset of *lines*, like the output of
    ``fairseq-preprocess --only-source`` on text whose documents are separated
    by blank lines. Each line ends with eos, so a blank line is an item of
    size 1 (just eos), and these items mark document boundaries.

    **Segments.** The lines are grouped into segments with
    :class:`~fairseq.data.TokenBlockDataset` (``break_mode="complete_doc"``,
    ``block_size = (tokens_per_sample - 1) // 2``). A segment is a run of
    whole, consecutive lines of one document and never crosses a document
    boundary. ``complete_doc`` puts a line longer than ``block_size`` in a
    block by itself. We split such a block into consecutive chunks of
    ``block_size - 1`` tokens plus a closing eos, so every segment has at most
    ``block_size`` tokens and ends with eos. The chunks stay in the same
    document, in order. Segment ``j`` belongs to document
    ``segment_doc[j]``: the number of separator lines before the segment's
    first line.

    **Items.** There is one item per segment. Item ``i`` pairs segment
    A = ``i`` with a segment B = ``partners[i]`` and returns
    ``[bos] + A + B`` as a 1-D LongTensor, that is
    ``<s> A </s> B </s>``. Any eos tokens from line ends inside A or B are
    kept. The length is ``1 + len(A) + len(B) <= tokens_per_sample``.

    **Labels.** ``labels[i] == 1`` ("is next") means B is segment ``i + 1``.
    This is possible only when segment ``i + 1`` is in the same document
    (``has_next[i]``), and it is chosen with probability 0.5.
    ``labels[i] == 0`` means B was drawn uniformly from the segments of the
    *other* documents. If the corpus has only one document, B is drawn from
    all segments except ``i`` and ``i + 1``.

    **Determinism.** All pairings for an epoch are drawn together by one
    ``numpy.random.RandomState`` seeded from ``(seed, epoch)``. This happens
    in :meth:`set_epoch`, and in ``__init__`` for the starting ``epoch``.
    The same seed and epoch always give the same pairs, and a different epoch
    gives different negatives. ``sizes``, ``labels`` and ``partners`` belong
    to the current epoch. They are updated *in place*, so wrappers that keep a
    reference to ``sizes`` (for example :class:`NestedDictionaryDataset`) see
    the new values. Item sizes change between epochs, so
    ``can_reuse_epoch_itr_across_epochs`` is ``False``.

    Args:
        dataset: dataset of lines, with document boundaries as size-1 items
        sizes (array-like): length of every line of ``dataset``
        dictionary (~fairseq.data.Dictionary): provides bos, eos and pad
        tokens_per_sample (int): maximum length of an item (>= 5)
        seed (int): random seed for the pairings
        epoch (int, optional): starting epoch (default: 1)
    """

    def __init__(self, dataset, sizes, dictionary, tokens_per_sample, seed, epoch=1):
        super().__init__()
        tokens_per_sample = int(tokens_per_sample)
        if tokens_per_sample < 5:
            raise ValueError(
                f"NextSentencePairDataset: tokens_per_sample={tokens_per_sample} is "
                "too small (need >= 5 for <s> A </s> B </s>)"
            )
        if dataset is None or len(dataset) == 0:
            raise ValueError("NextSentencePairDataset: the input dataset is empty")
        line_sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if len(line_sizes) != len(dataset):
            raise ValueError(
                f"NextSentencePairDataset: len(sizes)={len(line_sizes)} does not match "
                f"len(dataset)={len(dataset)}"
            )
        if not np.any(line_sizes > 1):
            raise ValueError(
                "NextSentencePairDataset: no segments (the dataset contains only "
                "empty lines / document separators)"
            )

        self.dictionary = dictionary
        self.bos = dictionary.bos()
        self.eos = dictionary.eos()
        self.pad = dictionary.pad()
        self.tokens_per_sample = tokens_per_sample
        self.block_size = (tokens_per_sample - 1) // 2
        self.seed = seed

        self.blocks = TokenBlockDataset(
            dataset,
            line_sizes,
            block_size=self.block_size,
            pad=self.pad,
            eos=self.eos,
            break_mode="complete_doc",
            document_sep_len=1,
        )
        self._build_segments(line_sizes)

        n = self.num_segments
        if self.num_documents < 2 and n < 3:
            raise ValueError(
                f"NextSentencePairDataset: cannot draw negative pairs from a single "
                f"document with only {n} segment(s) (need >= 3 segments or >= 2 "
                "documents)"
            )

        self._sizes = np.zeros(n, dtype=np.int64)
        self._labels = np.zeros(n, dtype=np.int64)
        self._partners = np.zeros(n, dtype=np.int64)
        self.epoch = None
        self._draw_pairs(epoch)

    # ------------------------------------------------------------------ #
    # segment table
    # ------------------------------------------------------------------ #

    def _build_segments(self, line_sizes):
        block_sizes = self.blocks.sizes.astype(np.int64)
        block_start_line = self.blocks.block_to_dataset_index[:, 0].astype(np.int64)

        # Document id of a line = number of separator lines at or before it.
        # Blocks never contain separator lines, so the id of a block's first
        # line is the block's document id.
        doc_of_line = np.cumsum(line_sizes == 1)
        block_doc = doc_of_line[block_start_line]

        # Split over-long blocks (single lines longer than block_size) into
        # chunks of (block_size - 1) content tokens + eos.
        bs = self.block_size
        content = bs - 1
        too_long = block_sizes > bs
        n_chunks = np.ones(len(block_sizes), dtype=np.int64)
        n_chunks[too_long] = -(-(block_sizes[too_long] - 1) // content)  # ceil
        seg_block = np.repeat(np.arange(len(block_sizes), dtype=np.int64), n_chunks)
        first_seg_of_block = np.cumsum(n_chunks) - n_chunks
        chunk_idx = np.arange(len(seg_block), dtype=np.int64) - np.repeat(
            first_seg_of_block, n_chunks
        )
        seg_offset = chunk_idx * content
        seg_split = too_long[seg_block]
        seg_len = np.where(
            seg_split,
            np.minimum(content, block_sizes[seg_block] - 1 - seg_offset) + 1,
            block_sizes[seg_block],
        )

        self.segment_block = seg_block
        self.segment_offset = seg_offset
        self.segment_split = seg_split
        self.segment_sizes = seg_len.astype(np.int64)
        # Document ids renumbered to 0..num_documents-1 (docs are contiguous).
        _, seg_doc = np.unique(block_doc[seg_block], return_inverse=True)
        self.segment_doc = seg_doc.reshape(-1).astype(np.int64)
        self.num_segments = len(seg_block)
        self.num_documents = int(self.segment_doc.max()) + 1

        doc_len = np.bincount(self.segment_doc, minlength=self.num_documents)
        doc_start = np.cumsum(doc_len) - doc_len
        self._doc_len = doc_len
        self._doc_start = doc_start

        has_next = np.zeros(self.num_segments, dtype=bool)
        has_next[:-1] = self.segment_doc[:-1] == self.segment_doc[1:]
        self.has_next = has_next

    def segment(self, j):
        """Tokens of segment ``j`` (1-D LongTensor ending with eos)."""
        block = self.blocks[int(self.segment_block[j])]
        if not self.segment_split[j]:
            return block.long()
        off = int(self.segment_offset[j])
        length = int(self.segment_sizes[j])
        return torch.cat(
            [block[off : off + length - 1].long(), torch.LongTensor([self.eos])]
        )

    # ------------------------------------------------------------------ #
    # pairing
    # ------------------------------------------------------------------ #

    def _draw_pairs(self, epoch):
        epoch = int(epoch)
        n = self.num_segments
        rng = np.random.RandomState(
            [int(self.seed) % (2**32), epoch % (2**32), _NSP_SEED_SALT]
        )
        coin = rng.random_sample(n)
        u = rng.random_sample(n)

        idx = np.arange(n, dtype=np.int64)
        is_next = (coin < 0.5) & self.has_next

        # Negatives: draw uniformly from all segments outside an excluded,
        # contiguous range [excl_start, excl_start + excl_len).
        if self.num_documents > 1:
            excl_start = self._doc_start[self.segment_doc]
            excl_len = self._doc_len[self.segment_doc]
        else:
            excl_start = idx
            excl_len = np.where(idx + 1 < n, 2, 1)
        r = np.floor(u * (n - excl_len)).astype(np.int64)
        r = np.minimum(r, n - excl_len - 1)  # guard against rounding
        negative = r + (r >= excl_start) * excl_len

        partners = np.where(is_next, idx + 1, negative)
        self._partners[:] = partners
        self._labels[:] = is_next.astype(np.int64)
        self._sizes[:] = 1 + self.segment_sizes + self.segment_sizes[partners]
        self.epoch = epoch

    def set_epoch(self, epoch, **unused):
        super().set_epoch(epoch)
        if epoch is None or int(epoch) == self.epoch:
            return
        self._draw_pairs(epoch)
        # fairseq's LRUCacheDataset (used by MaskTokensDataset.apply_mask)
        # caches items by index only; drop items of the previous epoch.
        LRUCacheDataset.__getitem__.cache_clear()
        LRUCacheDataset.collater.cache_clear()

    @property
    def labels(self):
        """NSP labels of the current epoch (1 = B follows A)."""
        return self._labels

    @property
    def partners(self):
        """Segment index of B for every item, for the current epoch."""
        return self._partners

    # ------------------------------------------------------------------ #
    # FairseqDataset API
    # ------------------------------------------------------------------ #

    def __getitem__(self, index):
        a = self.segment(index)
        b = self.segment(int(self._partners[index]))
        return torch.cat([torch.LongTensor([self.bos]), a, b])

    def __len__(self):
        return self.num_segments

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return int(self._sizes[index])

    def num_tokens(self, index):
        return int(self._sizes[index])

    def num_tokens_vec(self, indices):
        return self._sizes[indices]

    def collater(self, samples):
        if len(samples) == 0:
            return {}
        return data_utils.collate_tokens(samples, self.pad, left_pad=False)

    @property
    def supports_prefetch(self):
        return False

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False


class NextSentenceLabelDataset(BaseWrapperDataset):
    """NSP label (0/1) of each item of a :class:`NextSentencePairDataset`.

    The label is read from the parent's current ``labels`` at access time, so
    it always matches the parent's epoch. ``collater`` returns a 1-D
    LongTensor.
    """

    def __init__(self, dataset):
        if not isinstance(dataset, NextSentencePairDataset):
            raise ValueError(
                "NextSentenceLabelDataset must wrap a NextSentencePairDataset, "
                f"got {type(dataset).__name__}"
            )
        super().__init__(dataset)

    def __getitem__(self, index):
        return int(self.dataset.labels[index])

    def collater(self, samples):
        return torch.tensor([int(s) for s in samples], dtype=torch.long)
