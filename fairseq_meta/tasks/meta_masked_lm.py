import logging
import os
from dataclasses import dataclass, field

import numpy as np
from fairseq import utils
from fairseq.data import (
    ConcatDataset,
    Dictionary,
    NestedDictionaryDataset,
    PrependTokenDataset,
    TokenBlockDataset,
    data_utils,
)
from fairseq.data.shorten_dataset import maybe_shorten_dataset
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask
from omegaconf import II

from ..errors import MetaConfigError
from ..data.next_sentence_pair_dataset import (
    NSP_HEAD,
    NextSentenceLabelDataset,
    NextSentencePairDataset,
)
from ..data.temperature_sampling import resample, sampling_probabilities
from .meta_task import MetaTask, MetaTaskConfig, _resolved

logger = logging.getLogger(__name__)

SENTENCE_OBJECTIVE_CHOICES = ChoiceEnum(["none", "nsp"])


@dataclass
class MetaMaskedLMConfig(MaskedLMConfig, MetaTaskConfig):
    corpora: str = field(
        default="",
        metadata={
            "help": "comma-separated corpus names (subdirectories of each data "
            "directory) to train on; default: all"
        },
    )
    corpus_sampling_alpha: float = field(
        default=1.0,
        metadata={
            "help": "smooth corpus sizes by temperature as multilingual_masked_lm does: "
            "p(corpus) ∝ n^alpha (1 = proportional to size, 0 = uniform)"
        },
    )
    sentence_objective: SENTENCE_OBJECTIVE_CHOICES = field(
        default="none",
        metadata={
            "help": "second pre-training objective besides MLM; nsp: BERT's "
            "next-sentence prediction on segment pairs from the same document"
        },
    )
    valid_subset: str = II("dataset.valid_subset")
    disable_validation: bool = II("dataset.disable_validation")


@register_task("meta_masked_lm", dataclass=MetaMaskedLMConfig)
class MetaMaskedLMTask(MetaTask, MaskedLMTask):
    """Masked LM (plus optional NSP) pre-training as meta-learning (Lv et al., 2020).

    Every option of fairseq's ``masked_lm``; the training split is served as
    episodes of ``--meta-train-steps`` + 1 disjoint multi-task mini-batches, and
    :func:`fairseq_meta.meta_learning.meta_train_step` does the update.

    A data directory (each colon-separated shard) holds either one binarized
    corpus (``dict.txt``, ``train.bin``, ...) or one subdirectory per corpus, all
    with the same ``dict.txt``; mini-batches mix the corpora, sampled with
    probability ∝ size^alpha.
    """

    cfg: MetaMaskedLMConfig

    def __init__(self, cfg, dictionary=None):
        super().__init__(cfg, dictionary)
        self._sentence_labels = None

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        cls.check_meta_config(cfg)
        if cfg.corpus_sampling_alpha < 0:
            raise MetaConfigError(
                f"--corpus-sampling-alpha must be >= 0 (got {cfg.corpus_sampling_alpha})"
            )
        for i, data_path in enumerate(_split_paths(cfg.data)):
            corpora = select_corpora(data_path, cfg.corpora)
            _check_same_dictionary(corpora)
            _check_not_empty(corpora, _resolved(cfg, "train_subset", "train"))
            # fairseq validates on the first data directory only.
            if i == 0 and not _resolved(cfg, "disable_validation", False):
                for split in filter(None, _resolved(cfg, "valid_subset", "").split(",")):
                    _check_not_empty(corpora, split, hint=VALIDATION_HINT)
        return super().setup_task(cfg, **kwargs)

    @classmethod
    def load_dict(cls, cfg):
        first = select_corpora(_split_paths(cfg.data)[0], cfg.corpora)[0][1]
        dictionary = Dictionary.load(os.path.join(first, "dict.txt"))
        logger.info("dictionary: {} types".format(len(dictionary)))
        return dictionary

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.sentence_objective == "nsp":
            if not hasattr(model, "register_classification_head"):
                raise MetaConfigError(
                    f"--sentence-objective nsp needs a model with classification heads "
                    f"(--arch roberta_*), got {type(model).__name__}"
                )
            model.register_classification_head(NSP_HEAD, num_classes=2)
        return model

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        self.datasets[split] = self.as_episodes(split, self.datasets[split])

    def _load_dataset_split(self, split, epoch, combine):
        """The unmasked sequences of *split*, drawn across the selected corpora.

        Called by ``MaskedLMTask.load_dataset``, which masks, shuffles and
        collates them as usual.
        """
        paths = _split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        corpora = select_corpora(data_path, self.cfg.corpora)
        nsp = self.cfg.sentence_objective == "nsp"
        sequences, labels = [], []
        for _, corpus_path in corpora:
            split_path = os.path.join(corpus_path, split)
            if nsp:
                pairs = self._load_sentence_pairs(split_path, combine, epoch)
                sequences.append(pairs)
                labels.append(NextSentenceLabelDataset(pairs))
            else:
                sequences.append(self._load_token_blocks(split, split_path, combine))

        if len(corpora) > 1:
            if split == _resolved(self.cfg, "train_subset", "train"):
                sequences, labels = self._resample(corpora, sequences, labels, epoch)
            sequences = ConcatDataset(sequences)
            labels = ConcatDataset(labels) if nsp else []
        else:
            sequences = sequences[0]
            labels = labels[0] if nsp else []
        # MaskedLMTask.load_dataset builds the nested dataset right after this
        # returns; _regular_dataset picks the labels up there.
        self._sentence_labels = labels if nsp else None
        return sequences

    def _load_token_blocks(self, split, split_path, combine):
        # The composition of fairseq's masked_lm, per corpus: with one corpus this
        # is masked_lm's own pipeline, which the k = 0 identity test pins.
        dataset = self._load_indexed(split_path, combine)
        dataset = maybe_shorten_dataset(
            dataset,
            split,
            self.cfg.shorten_data_split_list,
            self.cfg.shorten_method,
            self.cfg.tokens_per_sample,
            self.cfg.seed,
        )
        dataset = TokenBlockDataset(
            dataset,
            dataset.sizes,
            self.cfg.tokens_per_sample - 1,  # one less for <s>
            pad=self.source_dictionary.pad(),
            eos=self.source_dictionary.eos(),
            break_mode=self.cfg.sample_break_mode,
        )
        logger.info("loaded {} blocks from: {}".format(len(dataset), split_path))
        return PrependTokenDataset(dataset, self.source_dictionary.bos())

    def _load_sentence_pairs(self, split_path, combine, epoch):
        dataset = self._load_indexed(split_path, combine)
        try:
            pairs = NextSentencePairDataset(
                dataset,
                dataset.sizes,
                self.source_dictionary,
                tokens_per_sample=self.cfg.tokens_per_sample,
                seed=self.cfg.seed,
                epoch=epoch,
            )
        except ValueError as e:
            raise MetaConfigError(f"{split_path}: {e}") from e
        logger.info("loaded {} sentence pairs from: {}".format(len(pairs), split_path))
        return pairs

    def _load_indexed(self, split_path, combine):
        dataset = data_utils.load_indexed_dataset(split_path, self.source_dictionary, combine=combine)
        if dataset is None:
            raise FileNotFoundError("Dataset not found: {}".format(split_path))
        return dataset

    def _resample(self, corpora, sequences, labels, epoch):
        probs = sampling_probabilities([len(d) for d in sequences], self.cfg.corpus_sampling_alpha)
        logger.info(
            "corpus sampling probabilities: %s",
            {name: round(float(p), 4) for (name, _), p in zip(corpora, probs)},
        )
        return (
            resample(sequences, probs, self.cfg.seed, epoch),
            resample(labels, probs, self.cfg.seed, epoch) if labels else [],
        )

    def _regular_dataset(self, src_dataset, target_dataset):
        dataset = super()._regular_dataset(src_dataset, target_dataset)
        if self._sentence_labels is None:
            return dataset
        defn = dict(dataset.defn)
        defn["nsp_target"] = self._sentence_labels
        return NestedDictionaryDataset(defn, sizes=dataset.sizes)


def _split_paths(data):
    paths = utils.split_paths(data)
    if not paths:
        raise MetaConfigError("no data directory given")
    return paths


def select_corpora(data_path, selection=""):
    """``[(name, directory)]`` of the corpora in *data_path* chosen by ``--corpora``."""
    if not os.path.isdir(data_path):
        raise MetaConfigError(f"data directory not found: {data_path}")
    subdirs = sorted(
        name
        for name in os.listdir(data_path)
        if os.path.isfile(os.path.join(data_path, name, "dict.txt"))
    )
    wanted = [c.strip() for c in selection.split(",") if c.strip()]
    if not subdirs:
        if not os.path.isfile(os.path.join(data_path, "dict.txt")):
            raise MetaConfigError(
                f"{data_path} holds no dict.txt, nor subdirectories with one: binarize "
                "a corpus with fairseq-preprocess --only-source (scripts/prepare_corpus.py)"
            )
        if wanted:
            raise MetaConfigError(
                f"--corpora {selection} given, but {data_path} holds a single corpus "
                "(no corpus subdirectories)"
            )
        return [(os.path.basename(os.path.normpath(data_path)), data_path)]
    unknown = [c for c in wanted if c not in subdirs]
    if unknown:
        raise MetaConfigError(
            f"unknown corpus {', '.join(unknown)} in --corpora; {data_path} has: {', '.join(subdirs)}"
        )
    return [(name, os.path.join(data_path, name)) for name in (wanted or subdirs)]


def _check_same_dictionary(corpora):
    """Token ids must mean the same in every corpus (counts may differ)."""
    first_name, first_path = corpora[0]
    reference = Dictionary.load(os.path.join(first_path, "dict.txt")).symbols
    for name, path in corpora[1:]:
        if Dictionary.load(os.path.join(path, "dict.txt")).symbols != reference:
            raise MetaConfigError(
                f"corpora {first_name} and {name} have different dictionaries "
                f"({os.path.join(first_path, 'dict.txt')} vs {os.path.join(path, 'dict.txt')}); "
                "binarize every corpus with the same fairseq-preprocess --srcdict"
            )


VALIDATION_HINT = "; validation needs at least 1 block (or pass --disable-validation)"


def _check_not_empty(corpora, split, hint=""):
    for name, path in corpora:
        prefix = os.path.join(path, split)
        if not os.path.exists(prefix + ".idx"):
            raise MetaConfigError(
                f"corpus {name} has no '{split}' split ({prefix}.idx not found){hint}"
            )
        empty = f"corpus {name} is empty: {prefix} holds no tokens{hint}"
        # An empty text file binarizes to a 0-byte .bin, which fairseq's mmap
        # reader cannot open (ValueError: cannot mmap an empty file, a traceback).
        if os.path.exists(prefix + ".bin") and os.path.getsize(prefix + ".bin") == 0:
            raise MetaConfigError(empty)
        dataset = data_utils.load_indexed_dataset(prefix, None)
        # fairseq-preprocess ends every line with </s>, so a file of blank or
        # whitespace-only lines binarizes to sequences of length 1 and no text:
        # empty too.
        if dataset is None or len(dataset) == 0 or int(np.max(dataset.sizes)) <= 1:
            raise MetaConfigError(empty)
