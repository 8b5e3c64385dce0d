"""Tests for fairseq_meta.data.next_sentence_pair_dataset."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import (
    Dictionary,
    IdDataset,
    ListDataset,
    MaskTokensDataset,
    NestedDictionaryDataset,
    NumelDataset,
    RightPadDataset,
    SortDataset,
    data_utils,
)

from fairseq_meta.data.next_sentence_pair_dataset import (
    NextSentenceLabelDataset,
    NextSentencePairDataset,
)

REPO = Path(__file__).resolve().parents[1]
WIKITEXT_VALID = REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
N_LINES = 300
TPS = 128  # tokens_per_sample for the real-data tests (block_size 63)


# --------------------------------------------------------------------------- #
# fixtures / helpers
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def wiki(tmp_path_factory):
    """First N_LINES lines of wikitext-2 valid, binarized by fairseq-preprocess."""
    if not WIKITEXT_VALID.is_file():
        pytest.skip(f"shared data not found: {WIKITEXT_VALID}")
    tmp = tmp_path_factory.mktemp("nsp_wiki")
    with open(WIKITEXT_VALID, encoding="utf-8") as f:
        lines = [next(f) for _ in range(N_LINES)]
    raw = tmp / "valid.txt"
    raw.write_text("".join(lines), encoding="utf-8")
    destdir = tmp / "bin"
    subprocess.run(
        [
            sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
            "--trainpref", str(raw), "--destdir", str(destdir), "--workers", "1",
        ],
        check=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    dictionary = Dictionary.load(str(destdir / "dict.txt"))
    lines_ds = data_utils.load_indexed_dataset(str(destdir / "train"), dictionary)
    assert lines_ds is not None and len(lines_ds) == N_LINES
    return lines_ds, dictionary


def make_nsp(wiki, tps=TPS, seed=1, epoch=1):
    lines_ds, dictionary = wiki
    return NextSentencePairDataset(lines_ds, lines_ds.sizes, dictionary, tps, seed, epoch)


def raw_documents(lines_ds):
    """Documents from the raw lines (independent of the dataset under test):
    each document = list of line tensors, split at size-1 (eos-only) lines."""
    docs, cur = [], []
    for i in range(len(lines_ds)):
        line = lines_ds[i]
        if len(line) == 1:
            if cur:
                docs.append(cur)
            cur = []
        else:
            cur.append(line)
    if cur:
        docs.append(cur)
    return docs


def strip_eos(t, eos):
    return t[t != eos].tolist()


def split_item(ds, i):
    item = ds[i]
    la = int(ds.segment_sizes[i])
    return item, item[1 : 1 + la], item[1 + la :]


def is_subsequence(needle, hay):
    n = len(needle)
    return any(hay[k : k + n] == needle for k in range(len(hay) - n + 1))


# --------------------------------------------------------------------------- #
# real data
# --------------------------------------------------------------------------- #


def test_segments_partition_documents(wiki):
    lines_ds, d = wiki
    ds = make_nsp(wiki)
    docs = raw_documents(lines_ds)
    assert ds.num_documents == len(docs) > 10
    # Segments are <= block_size, end with eos, and concatenated per document
    # (ignoring eos) reproduce exactly that document's text.
    rebuilt = [[] for _ in docs]
    for j in range(ds.num_segments):
        seg = ds.segment(j)
        assert len(seg) == ds.segment_sizes[j] <= ds.block_size
        assert seg[-1].item() == d.eos()
        rebuilt[ds.segment_doc[j]].extend(strip_eos(seg, d.eos()))
    for doc, got in zip(docs, rebuilt):
        assert got == strip_eos(torch.cat(doc), d.eos())
    # real data has both over-long lines (split) and multi-line segments
    assert ds.segment_split.any()
    assert (np.diff(ds.segment_doc) >= 0).all()
    assert ds.has_next.sum() > 50


def test_pairs_labels_and_layout(wiki):
    lines_ds, d = wiki
    ds = make_nsp(wiki)
    docs = [strip_eos(torch.cat(doc), d.eos()) for doc in raw_documents(lines_ds)]
    assert len(ds) == ds.num_segments
    assert len(ds.sizes) == len(ds) and len(ds.labels) == len(ds)
    n_pos = 0
    for i in range(len(ds)):
        item, a, b = split_item(ds, i)
        j = int(ds.partners[i])
        assert item.dtype == torch.long
        assert len(item) == ds.sizes[i] == ds.size(i) == ds.num_tokens(i) <= TPS
        # <s> A </s> B </s>, where the eos inside A / B are exactly line ends
        assert item[0].item() == d.bos() and (item[1:] == d.bos()).sum() == 0
        assert torch.equal(a, ds.segment(i)) and torch.equal(b, ds.segment(j))
        assert a[-1].item() == d.eos() and item[-1].item() == d.eos()
        eos_pos = (item == d.eos()).nonzero().view(-1).tolist()
        assert len(a) in eos_pos and len(item) - 1 in eos_pos
        assert d.pad() not in item.tolist()
        if ds.labels[i] == 1:
            n_pos += 1
            assert j == i + 1 and ds.has_next[i]
            assert ds.segment_doc[j] == ds.segment_doc[i]
            # A followed by B is contiguous text of A's document
            doc = docs[ds.segment_doc[i]]
            assert is_subsequence(strip_eos(a, d.eos()) + strip_eos(b, d.eos()), doc)
        else:
            assert ds.labels[i] == 0
            assert ds.segment_doc[j] != ds.segment_doc[i]
    # only eligible items can be positive, and ~half of them are
    eligible = ds.has_next
    assert ds.labels[~eligible].sum() == 0
    frac = ds.labels[eligible].mean()
    assert 0.35 <= frac <= 0.65, frac
    assert n_pos == ds.labels.sum()


def test_eos_layout_matches_line_ends(wiki):
    lines_ds, d = wiki
    ds = make_nsp(wiki, tps=512)  # block_size 255: segments span several lines
    bti = ds.blocks.block_to_dataset_index

    def n_eos_expected(j):
        if ds.segment_split[j]:
            return 1
        s, _, e = bti[ds.segment_block[j]]
        return e - s + 1  # one eos per line

    multi_line = 0
    for i in range(len(ds)):
        item = ds[i]
        j = int(ds.partners[i])
        assert len(item) <= 512
        multi_line += n_eos_expected(i) > 1
        assert (item == d.eos()).sum().item() == n_eos_expected(i) + n_eos_expected(j)
    assert multi_line > 0


def test_determinism_and_epochs(wiki):
    ds1 = make_nsp(wiki, seed=3)
    ds2 = make_nsp(wiki, seed=3)
    assert np.array_equal(ds1.partners, ds2.partners)
    assert np.array_equal(ds1.labels, ds2.labels)
    for i in range(0, len(ds1), 7):
        assert torch.equal(ds1[i], ds2[i])

    p1, l1, s1 = ds1.partners.copy(), ds1.labels.copy(), ds1.sizes.copy()
    sizes_ref = ds1.sizes
    ds1.set_epoch(2)
    assert ds1.epoch == 2
    assert not np.array_equal(ds1.partners, p1)
    neg = (l1 == 0) & (ds1.labels == 0)
    assert (ds1.partners[neg] != p1[neg]).mean() > 0.5  # negatives are redrawn
    # sizes updated in place (wrappers holding the array see the change)
    assert ds1.sizes is sizes_ref and not np.array_equal(ds1.sizes, s1)
    assert all(len(ds1[i]) == ds1.sizes[i] for i in range(len(ds1)))

    # built directly at epoch 2 == moved to epoch 2; back to 1 == original
    ds3 = make_nsp(wiki, seed=3, epoch=2)
    assert np.array_equal(ds3.partners, ds1.partners)
    ds1.set_epoch(1)
    assert np.array_equal(ds1.partners, p1) and np.array_equal(ds1.labels, l1)
    # another seed gives other pairs
    assert not np.array_equal(make_nsp(wiki, seed=4).partners, p1)
    assert ds1.can_reuse_epoch_itr_across_epochs is False
    assert ds1.supports_prefetch is False


def test_errors(wiki):
    lines_ds, d = wiki
    with pytest.raises(ValueError, match="tokens_per_sample"):
        NextSentencePairDataset(lines_ds, lines_ds.sizes, d, 4, seed=1)
    with pytest.raises(ValueError, match="empty"):
        NextSentencePairDataset(ListDataset([], np.array([])), np.array([]), d, 64, 1)
    only_sep = [torch.LongTensor([d.eos()])] * 3
    with pytest.raises(ValueError, match="no segments"):
        NextSentencePairDataset(ListDataset(only_sep), np.array([1, 1, 1]), d, 64, 1)
    one_seg = [torch.LongTensor([7, 8, d.eos()])]
    with pytest.raises(ValueError, match="single document"):
        NextSentencePairDataset(ListDataset(one_seg), np.array([3]), d, 64, 1)
    with pytest.raises(ValueError, match="len\\(sizes\\)"):
        NextSentencePairDataset(lines_ds, lines_ds.sizes[:-1], d, 64, 1)
    with pytest.raises(ValueError, match="NextSentencePairDataset"):
        NextSentenceLabelDataset(lines_ds)
    # smallest allowed tokens_per_sample works
    ds = NextSentencePairDataset(lines_ds, lines_ds.sizes, d, 5, seed=1)
    assert ds.block_size == 2 and ds.sizes.max() <= 5
    assert all(len(ds[i]) <= 5 for i in range(0, len(ds), 97))


def test_composes_with_mlm_and_nested_dataset(wiki):
    lines_ds, base_dict = wiki
    vocab = copy.deepcopy(base_dict)  # keep the shared fixture dictionary unmodified
    mask_idx = vocab.add_symbol("<mask>")

    pair = NextSentencePairDataset(lines_ds, lines_ds.sizes, vocab, TPS, seed=5)
    src, tgt = MaskTokensDataset.apply_mask(
        pair, vocab, pad_idx=vocab.pad(), mask_idx=mask_idx, seed=5, mask_prob=0.15
    )
    with data_utils.numpy_seed(5):
        shuffle = np.random.permutation(len(pair))
    nested = SortDataset(
        NestedDictionaryDataset(
            {
                "id": IdDataset(),
                "net_input": {
                    "src_tokens": RightPadDataset(src, pad_idx=vocab.pad()),
                    "src_lengths": NumelDataset(src, reduce=False),
                },
                "target": RightPadDataset(tgt, pad_idx=vocab.pad()),
                "nsp_target": NextSentenceLabelDataset(pair),
                "nsentences": NumelDataset(src, reduce=True),
            },
            sizes=[pair.sizes],
        ),
        sort_order=[shuffle, pair.sizes],
    )
    assert nested.can_reuse_epoch_itr_across_epochs is False

    def check_batch(indices):
        batch = nested.collater([nested[i] for i in indices])
        toks = batch["net_input"]["src_tokens"]
        tgts = batch["target"]
        assert toks.shape[0] == len(indices) == batch["nsp_target"].shape[0]
        assert batch["nsp_target"].dtype == torch.long
        for row, idx in enumerate(batch["id"].tolist()):
            n = int(batch["net_input"]["src_lengths"][row])
            assert n == pair.sizes[idx]
            assert batch["nsp_target"][row].item() == pair.labels[idx]
            # un-masking the source row gives back exactly pair[idx]
            t = tgts[row, :n]
            restored = torch.where(t != vocab.pad(), t, toks[row, :n])
            assert torch.equal(restored, pair[idx])
            assert (toks[row, n:] == vocab.pad()).all()
        return batch

    order = nested.ordered_indices()
    check_batch(order[:16].tolist())
    # an item whose pair changes at epoch 2, fetched just before the change:
    # fairseq's LRUCacheDataset (inside apply_mask) must not serve it stale
    next_epoch = NextSentencePairDataset(lines_ds, lines_ds.sizes, vocab, TPS, seed=5, epoch=2)
    idx = int(np.flatnonzero(next_epoch.partners != pair.partners)[0])
    check_batch([idx])
    labels_before = pair.labels.copy()
    nested.set_epoch(2)
    assert pair.epoch == 2 and not np.array_equal(pair.labels, labels_before)
    check_batch([idx])
    check_batch(order[:16].tolist())
    check_batch(order[-16:].tolist())


# --------------------------------------------------------------------------- #
# hand-built in-memory corpus
# --------------------------------------------------------------------------- #


def _tiny_corpus(d, eos):
    """Lines (tokens w/o eos) with None as document separator."""
    spec = [
        None,
        [10, 11],            # doc 0
        [12],
        [13, 14, 15, 16],
        None,
        None,                # two separators in a row: no empty document
        [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30],  # doc 1: over-long line
        [31],
        None,
        [40, 41, 42],        # doc 2: single segment
    ]
    items = [
        torch.LongTensor([eos]) if s is None else torch.LongTensor(s + [eos]) for s in spec
    ]
    return items


def test_tiny_exact_structure():
    d = Dictionary()
    for k in range(60):
        d.add_symbol(f"w{k}")
    eos = d.eos()
    # shift ids so that tokens are real symbols > nspecial
    items = [torch.where(t == eos, t, t + 4) for t in _tiny_corpus(d, eos)]
    sizes = np.array([len(t) for t in items])
    ds = NextSentencePairDataset(ListDataset(items, sizes), sizes, d, 11, seed=0)
    assert ds.block_size == 5
    E = eos

    def w(*xs):
        return [x + 4 for x in xs]

    expected_segments = [
        w(10, 11) + [E] + w(12) + [E],     # doc 0: lines 1-2 (size 5)
        w(13, 14, 15, 16) + [E],           # doc 0: line 3 (size 5)
        w(20, 21, 22, 23) + [E],           # doc 1: over-long line, chunk 1
        w(24, 25, 26, 27) + [E],           # chunk 2
        w(28, 29, 30) + [E],               # chunk 3 (keeps the line's own eos)
        w(31) + [E],                       # doc 1: next line
        w(40, 41, 42) + [E],               # doc 2
    ]
    assert ds.num_segments == len(ds) == 7
    assert [ds.segment(j).tolist() for j in range(7)] == expected_segments
    assert ds.segment_doc.tolist() == [0, 0, 1, 1, 1, 1, 2]
    assert ds.num_documents == 3
    assert ds.has_next.tolist() == [True, False, True, True, True, False, False]
    assert ds.segment_sizes.tolist() == [5, 5, 5, 5, 4, 2, 4]

    seen_pos, seen_neg = set(), set()
    for epoch in range(1, 30):
        ds.set_epoch(epoch)
        for i in range(7):
            j = int(ds.partners[i])
            item = ds[i].tolist()
            assert item == [d.bos()] + expected_segments[i] + expected_segments[j]
            assert ds.sizes[i] == len(item) <= 11
            if ds.labels[i] == 1:
                assert j == i + 1 and ds.segment_doc[j] == ds.segment_doc[i]
                seen_pos.add(i)
            else:
                assert ds.segment_doc[j] != ds.segment_doc[i]
                seen_neg.add((i, j))
    # every eligible item was positive at least once; all negatives valid and varied
    assert seen_pos == {0, 2, 3, 4}
    assert {j for i, j in seen_neg if i == 6} == {0, 1, 2, 3, 4, 5}

    labels = NextSentenceLabelDataset(ds)
    ds.set_epoch(7)
    assert [labels[i] for i in range(7)] == ds.labels.tolist()
    assert torch.equal(labels.collater([labels[i] for i in range(7)]),
                       torch.LongTensor(ds.labels))
    assert labels.can_reuse_epoch_itr_across_epochs is False
    # the label view follows the parent's epoch
    labels.set_epoch(8)
    assert ds.epoch == 8
    assert [labels[i] for i in range(7)] == ds.labels.tolist()
    # pair collater right-pads
    batch = ds.collater([ds[0], ds[6]])
    assert batch.shape == (2, max(ds.sizes[0], ds.sizes[6]))


def test_tiny_single_document():
    d = Dictionary()
    eos = d.eos()
    items = [torch.LongTensor([10 + k, eos]) for k in range(5)]  # 5 lines, 1 doc
    sizes = np.array([2] * 5)
    # block_size 2: one line per segment
    ds = NextSentencePairDataset(ListDataset(items, sizes), sizes, d, 5, seed=0)
    assert ds.num_documents == 1 and ds.num_segments == 5
    for epoch in range(1, 40):
        ds.set_epoch(epoch)
        for i in range(5):
            j = int(ds.partners[i])
            if ds.labels[i] == 1:
                assert j == i + 1
            else:
                assert j not in (i, i + 1)
            assert ds[i].tolist() == [d.bos(), 10 + i, eos, 10 + j, eos]
