"""Label dictionaries of classification data: fairseq-preprocess pads every
dictionary to a multiple of 8 with ``madeupwordNNNN`` symbols, which are no labels."""
import re

_PADDING = re.compile(r"madeupword\d{4}")


def is_padding_symbol(symbol):
    """fairseq-preprocess pads a dictionary to a multiple of 8 with madeupwordNNNN."""
    return bool(_PADDING.fullmatch(symbol))


def real_labels(symbols):
    """The label symbols of a label dictionary, without fairseq's padding."""
    return [s for s in symbols if not is_padding_symbol(s)]
