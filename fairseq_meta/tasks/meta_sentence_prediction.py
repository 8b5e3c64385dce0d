import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.data import Dictionary
from fairseq.tasks import FairseqTask, register_task
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask
from omegaconf import II, MISSING, OmegaConf, open_dict

from ..errors import MetaConfigError
from ..data.labels import real_labels
from ..data.multi_task_dataset import MultiTaskDataset
from ..data.temperature_sampling import resample, sampling_probabilities
from .meta_task import MetaTask, MetaTaskConfig, _resolved

logger = logging.getLogger(__name__)


@dataclass
class MetaSentencePredictionConfig(MetaTaskConfig):
    data: str = field(
        default=MISSING,
        metadata={"help": "directory with one sentence_prediction data directory per task"},
    )
    tasks: str = field(
        default="",
        metadata={
            "help": "comma-separated task names (subdirectories of the data directory, "
            "each laid out as fairseq's sentence_prediction expects: input0/, optional "
            "input1/, label/); default: all"
        },
    )
    task_sampling_alpha: float = field(
        default=1.0,
        metadata={"help": "sample tasks with p ∝ n^alpha (1: proportional to size, 0: uniform)"},
    )
    init_token: Optional[int] = field(
        default=0, metadata={"help": "token prepended to each example (<s>)"}
    )
    separator_token: Optional[int] = field(
        default=2, metadata={"help": "token between the two sentences of a pair (</s>)"}
    )
    max_positions: int = field(default=512, metadata={"help": "max tokens per example"})
    shorten_method: str = field(
        default="none", metadata={"help": "none, truncate or random_crop (sentence_prediction's)"}
    )
    seed: int = II("common.seed")


@register_task("meta_sentence_prediction", dataclass=MetaSentencePredictionConfig)
class MetaSentencePredictionTask(MetaTask, FairseqTask):
    """Supervised meta pre-training over several labeled tasks (Lv et al., 2020).

    Every task is read by fairseq's own ``sentence_prediction`` pipeline and gets
    its own classification head named after it (MSE regression for tasks whose
    labels are ``label/*.label`` float files, e.g. STS-B). Mini-batches mix tasks
    sampled ∝ size^alpha; training consumes episodes of k+1 of them exactly as
    ``meta_masked_lm`` does. k = 0 is MT-DNN-style multi-task training; with one
    task it is fairseq's ``sentence_prediction`` step for step.
    """

    def __init__(self, cfg, dictionary, subtasks):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.subtasks = subtasks

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        cls.check_meta_config(cfg)
        if cfg.task_sampling_alpha < 0:
            raise MetaConfigError(f"--task-sampling-alpha must be >= 0 (got {cfg.task_sampling_alpha})")
        names = select_tasks(cfg.data, cfg.tasks)
        subtasks = {name: _build_subtask(cfg, name) for name in names}
        dictionaries = {n: t.source_dictionary for n, t in subtasks.items()}
        first = names[0]
        for name in names[1:]:
            if dictionaries[name].symbols != dictionaries[first].symbols:
                raise MetaConfigError(
                    f"tasks {first} and {name} have different input dictionaries "
                    f"({os.path.join(cfg.data, name, 'input0', 'dict.txt')}); binarize every "
                    "task with the pre-training dict.txt (scripts/prepare_glue.py)"
                )
        for name, task in subtasks.items():
            kind = "regression" if task.cfg.regression_target else f"{task.cfg.num_classes} classes"
            logger.info("task %s: %s", name, kind)
        return cls(cfg, dictionaries[first], subtasks)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        datasets = {}
        for name, task in self.subtasks.items():
            datasets[name] = task.load_dataset(split, combine=combine)
        is_train = split == _resolved(self.cfg, "train_subset", "train")
        if is_train and len(datasets) > 1:
            datasets = self._resample(datasets, epoch)
        dataset = MultiTaskDataset(datasets, seed=self.cfg.seed)
        self.datasets[split] = self.as_episodes(split, dataset)
        return self.datasets[split]

    def _resample(self, datasets, epoch):
        probs = sampling_probabilities([len(d) for d in datasets.values()], self.cfg.task_sampling_alpha)
        logger.info(
            "task sampling probabilities: %s",
            {n: round(float(p), 4) for n, p in zip(datasets, probs)},
        )
        return dict(zip(datasets, resample(list(datasets.values()), probs, self.cfg.seed, epoch)))

    def build_model(self, cfg, from_checkpoint=False):
        from fairseq import models

        with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.ExitStack():
            cfg.max_positions = self.cfg.max_positions
        model = models.build_model(cfg, self, from_checkpoint)
        if not hasattr(model, "register_classification_head"):
            raise MetaConfigError(
                f"--task meta_sentence_prediction needs a model with classification heads "
                f"(--arch roberta_*), got {type(model).__name__}"
            )
        for name, task in self.subtasks.items():
            model.register_classification_head(name, num_classes=task.cfg.num_classes)
        return model

    def max_positions(self):
        return self.cfg.max_positions

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


def select_tasks(data, selection=""):
    if not os.path.isdir(data):
        raise MetaConfigError(f"data directory not found: {data}")
    available = sorted(
        n for n in os.listdir(data) if os.path.isfile(os.path.join(data, n, "input0", "dict.txt"))
    )
    wanted = [t.strip() for t in selection.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise MetaConfigError(
            f"unknown task {', '.join(unknown)} in --tasks; {data} has: "
            f"{', '.join(available) or 'no task directories (<task>/input0/dict.txt)'}"
        )
    if not (wanted or available):
        raise MetaConfigError(f"{data} holds no task directories (<task>/input0/dict.txt)")
    return wanted or available


def _build_subtask(cfg, name):
    """fairseq's sentence_prediction task for one labeled task, its head named after it."""
    path = os.path.join(cfg.data, name)
    label_dict = os.path.join(path, "label", "dict.txt")
    regression = os.path.isfile(os.path.join(path, "label", "train.label"))
    if os.path.isfile(label_dict):
        if regression:
            raise MetaConfigError(
                f"task {name} has both a label dictionary and regression targets "
                f"({path}/label/): classification or regression?"
            )
        labels = Dictionary.load(label_dict)
        num_classes = len(real_labels(labels.symbols[labels.nspecial:]))
    elif regression:
        num_classes = 1
    else:
        raise MetaConfigError(
            f"task {name} has no labels: neither {label_dict} (classification) nor "
            f"{os.path.join(path, 'label', 'train.label')} (regression)"
        )
    sub_cfg = SentencePredictionConfig(
        data=path,
        num_classes=num_classes,
        init_token=cfg.init_token,
        separator_token=cfg.separator_token,
        shorten_method=cfg.shorten_method,
        max_positions=cfg.max_positions,
        regression_target=regression,
        classification_head_name=name,
        seed=cfg.seed,
    )
    return SentencePredictionTask.setup_task(sub_cfg)
