"""fairseq_meta: "Pre-training Text Representations as Meta Learning" (Lv et al., 2020)
as a fairseq plugin (``--user-dir fairseq_meta``)."""
