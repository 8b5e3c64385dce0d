"""fairseq_meta: "Pre-training Text Representations as Meta Learning" (Lv et al., 2020)
as a fairseq plugin: ``fairseq-train --user-dir fairseq_meta --task meta_masked_lm``.

Importing the package registers everything: fairseq's user-dir loader imports
only ``tasks/`` and ``models/`` by itself, so criterions and optimizers are
imported here.
"""
from . import compat, errors

compat.patch_fairseq_checkpoint_loading()
errors.install_one_line_errors()

from . import optim  # noqa: E402,F401
from . import tasks  # noqa: E402,F401
from .tasks import meta_masked_lm, meta_sentence_prediction  # noqa: E402,F401
from . import criterions  # noqa: E402,F401
from .models import imported_roberta  # noqa: E402,F401  (registers --arch imported_roberta)
from .bpe import hf_tokenizer  # noqa: E402,F401  (registers --bpe hf_tokenizer)

__version__ = "0.1.0"
