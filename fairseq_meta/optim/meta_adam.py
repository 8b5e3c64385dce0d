from dataclasses import dataclass

from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

from .meta_optimizer import MetaOptimizer, MetaOptimizerConfig


@dataclass
class MetaAdamConfig(FairseqAdamConfig, MetaOptimizerConfig):
    pass


@register_optimizer("meta_adam", dataclass=MetaAdamConfig)
class MetaAdam(MetaOptimizer, FairseqAdam):
    """fairseq's Adam (every --adam-* option) as the outer optimizer of meta-learning."""
