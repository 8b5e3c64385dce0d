from . import meta_masked_lm  # noqa: F401  (registers --criterion meta_masked_lm)
