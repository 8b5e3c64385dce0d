"""Meta optimizers: a fairseq optimizer for the outer step plus the inner-loop settings."""
from .meta_optimizer import MetaOptimizer, MetaOptimizerConfig, find_meta_optimizer  # noqa: F401
from . import meta_adam  # noqa: F401  (registers --optimizer meta_adam)
