"""Import a transformers BERT checkpoint directory as a fairseq RoBERTa model directory.

    python scripts/import_model.py SRC OUT [--force]

SRC holds config.json, model.safetensors (or pytorch_model.bin) and tokenizer.json;
OUT gets model.pt, dict.txt, vocab.txt, tokenizer.json, model_args.txt, import.json.
Load it with ``import fairseq_meta; RobertaModel.from_pretrained(OUT)``; continue
pre-training with ``fairseq-train DATA --user-dir fairseq_meta --restore-file
OUT/model.pt $(cat OUT/model_args.txt) ...``. The import is checked before anything
is written: the fairseq model must reproduce transformers' last hidden state within
1e-4 on a probe sentence. The work is fairseq_meta/run/import_model.py.
"""
import argparse

from fairseq_meta.run.cli import Cli, run
from fairseq_meta.run.import_model import import_model

PROG = "import_model"


def build_argparser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="a transformers BERT model directory")
    p.add_argument("out", metavar="OUT", help="the fairseq model directory to write")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    return p


def main(argv=None):
    args = build_argparser().parse_args(argv)
    import_model(args.src, args.out, force=args.force, log=Cli(PROG).log)
    return 0


if __name__ == "__main__":  # python -m fairseq_meta.commands.import_model
    run(PROG, main)
