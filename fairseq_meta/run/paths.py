"""Where the tools find the plugin and the repository's files, written once.

``USER_DIR`` is what ``--user-dir`` (``common.user_dir`` with hydra) is given: the
``fairseq_meta`` package directory itself. The tools start fairseq-train,
fairseq-hydra-train and the scripts from a checkout (``pip install -e .``): configs/
and scripts/ live beside the package, not inside it.
"""
from pathlib import Path

USER_DIR = Path(__file__).resolve().parents[1]
REPO = USER_DIR.parent
SCRIPTS = REPO / "scripts"
CONFIG_DIR = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
