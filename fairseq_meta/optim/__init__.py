"""Meta optimizers: a fairseq optimizer for the outer step that also owns the inner update rule."""
from .meta_optimizer import MetaOptimizer, MetaOptimizerConfig, find_meta_optimizer  # noqa: F401
from . import meta_adam  # noqa: F401  (registers --optimizer meta_adam)
