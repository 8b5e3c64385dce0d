"""``--arch imported_roberta``: fairseq's RoBERTa with the LayerNorm epsilon of the
checkpoint it was imported from (``scripts/import_model.py``).

fairseq builds every LayerNorm of RoBERTa with eps 1e-5 and has no option for it;
BERT-family checkpoints of transformers use 1e-12. Measured on all-MiniLM-L6-v2 over
real text, changing only the eps moves the last hidden state by up to 1.3e-3, so an
imported model must compute with the source's eps to be the model it was. This
architecture is ``roberta`` plus ``--layernorm-eps`` (default: fairseq's 1e-5), set
on every LayerNorm after fairseq has built the model; weights, state-dict keys and
everything else are RoBERTa's, so its checkpoints fine-tune and export as RoBERTa's.
"""
import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaModel, base_architecture
from fairseq.utils import safe_getattr

FAIRSEQ_LAYERNORM_EPS = 1e-5


def set_layernorm_eps_(module, eps):
    """Every LayerNorm under *module* (torch's, or apex's fused one on a GPU) uses *eps*."""
    for m in module.modules():
        if isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "FusedLayerNorm":
            m.eps = eps
    return module


@register_model("imported_roberta")
class ImportedRobertaModel(RobertaModel):

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        parser.add_argument("--layernorm-eps", type=float, metavar="EPS",
                            help="epsilon of every LayerNorm (the imported checkpoint's; "
                                 f"fairseq's RoBERTa: {FAIRSEQ_LAYERNORM_EPS:g})")

    @classmethod
    def build_model(cls, args, task):
        imported_roberta(args)
        return set_layernorm_eps_(super().build_model(args, task), args.layernorm_eps)


@register_model_architecture("imported_roberta", "imported_roberta")
def imported_roberta(args):
    args.layernorm_eps = safe_getattr(args, "layernorm_eps", None) or FAIRSEQ_LAYERNORM_EPS
    base_architecture(args)
