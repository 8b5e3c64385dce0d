"""``--bpe hf_tokenizer``: a model's own ``tokenizer.json`` (the ``tokenizers`` library)
as fairseq's BPE, for encoders imported from transformers whose tokenizer fairseq has
no BPE for (RoBERTa's byte-level BPE in transformers' numbering, XLM-R's unigram
model; ``scripts/import_model.py``). BERT imports use fairseq's own ``bert`` BPE.

``encode`` gives the tokens the source's tokenizer gives, space-separated, without
special tokens (fairseq adds ``<s>``/``</s>``); their spelling is the model's
``dict.txt``. ``decode`` is the tokenizer's own decoding of those tokens.
"""
from dataclasses import dataclass, field
from typing import Optional

from fairseq import file_utils
from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass


@dataclass
class HfTokenizerBPEConfig(FairseqDataclass):
    # import_model.py writes "${task.data}/tokenizer.json": the model's own directory
    hf_tokenizer_json: Optional[str] = field(default=None, metadata={"help": "the model's tokenizer.json"})


@register_bpe("hf_tokenizer", dataclass=HfTokenizerBPEConfig)
class HfTokenizerBPE(object):
    def __init__(self, cfg):
        from tokenizers import Tokenizer

        if not cfg.hf_tokenizer_json:
            raise ValueError("--bpe hf_tokenizer needs --hf-tokenizer-json (a tokenizer.json)")
        self.tokenizer = Tokenizer.from_file(file_utils.cached_path(cfg.hf_tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.vocab = self.tokenizer.get_vocab()

    def encode(self, x: str) -> str:
        return " ".join(self.tokenizer.encode(x, add_special_tokens=False).tokens)

    def decode(self, x: str) -> str:
        ids = [self.vocab[t] for t in x.split() if t in self.vocab]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def is_beginning_of_word(self, x: str) -> bool:
        # byte-level BPE marks a word start with "Ġ", sentencepiece with "▁"
        return x.startswith(("Ġ", "▁")) or x.startswith("<")
