"""Tokenizers that fairseq's hub interface (``RobertaModel.from_pretrained``) builds."""
