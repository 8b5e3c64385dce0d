"""An evaluation that can tell two pre-trained initialisations apart.

Four measurements of a pre-trained RoBERTa checkpoint, each with mean, standard
deviation and 95% confidence interval over seeds (or draws), and paired
differences to the first checkpoint given:

1. :mod:`.glue_runs` + :mod:`.runner` — fine-tuning on GLUE tasks with fairseq's
   own machinery (configs/finetune), for a budget in epochs;
2. few-shot fine-tuning on n examples per task, the same draws for every checkpoint;
3. :mod:`.probe` — a frozen-feature linear probe (scikit-learn);
4. :mod:`.adaptation` — masked-LM loss on a new domain after t adaptation steps
   (the headline: the most sensitive of the four at this scale).

:mod:`.stats` holds the statistics (confidence intervals, paired differences,
minimum detectable effect), :mod:`.report` the tables and plots, :mod:`.model`
the checks of checkpoints, dictionaries and text. ``scripts/evaluate.py`` is the
command line.
"""
from .runner import MEASUREMENTS, Settings, evaluate  # noqa: F401
