"""Export a pre-trained checkpoint for use afterwards.

  python scripts/export_model.py runs/pretrain-demo/checkpoints/checkpoint_last.pt \\
      --out-dir runs/pretrain-demo/model --huggingface runs/pretrain-demo/huggingface

--out-dir gets the directory fairseq's RoBERTa hub interface loads as it is
(model.pt, dict.txt, sentencepiece.bpe.model):

  from fairseq.models.roberta import RobertaModel
  roberta = RobertaModel.from_pretrained("runs/pretrain-demo/model")
  roberta.fill_mask("The <mask> of the city.", topk=3)

--huggingface also writes a transformers XLMRobertaForMaskedLM and its
tokenizer (needs the 'export' extra: pip install -e '.[export]'), checked
against fairseq's logits on a probe sentence before it is written.
The sentencepiece model and dictionary default to spm.model and dict.txt in
the training data directory named in the checkpoint (scripts/prepare_corpus.py
output). Logic: fairseq_meta/run/export.py.
"""
import argparse
import logging

# Importing fairseq_meta imports fairseq, whose text_to_speech task turns on INFO
# logging for the whole process; the script prints its own progress lines.
logging.basicConfig(level=logging.WARNING)

from fairseq_meta.run.cli import Cli, run  # noqa: E402
from fairseq_meta.run.export import export  # noqa: E402

PROG = "export_model"


def build_argparser():
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a fairseq-train checkpoint (meta_masked_lm or masked_lm, "
                        "--arch roberta_*), or a directory of scripts/import_model.py "
                        "(then only --huggingface)")
    parser.add_argument("--out-dir", default=None, metavar="DIR",
                        help="the fairseq model directory to write (required for a checkpoint)")
    parser.add_argument("--spm-model", metavar="PATH", default=None,
                        help="sentencepiece model the training data was encoded with "
                        "(default: spm.model in the checkpoint's data directory)")
    parser.add_argument("--dict", metavar="PATH", default=None,
                        help="fairseq dictionary of the training data "
                        "(default: dict.txt in the checkpoint's data directory)")
    parser.add_argument("--huggingface", metavar="DIR", default=None,
                        help="also write a transformers XLM-R model + tokenizer here")
    parser.add_argument("--force", action="store_true",
                        help="replace non-empty output directories")
    return parser


def main(argv=None):
    args = build_argparser().parse_args(argv)
    cli = Cli(PROG)
    export(args.checkpoint, args.out_dir, spm_model=args.spm_model, dictionary=args.dict,
           huggingface=args.huggingface, force=args.force, log=cli.log)


if __name__ == "__main__":  # python -m fairseq_meta.commands.export_model
    run(PROG, main)
