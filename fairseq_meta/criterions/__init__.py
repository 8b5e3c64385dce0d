from . import meta_masked_lm  # noqa: F401  (registers --criterion meta_masked_lm)
from . import meta_sentence_prediction  # noqa: F401  (registers --criterion meta_sentence_prediction)
