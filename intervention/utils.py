"""Upstream-style access to the artifact base dir (`from intervention.utils import BASE_DIR`).

Upstream hard-coded BASE_DIR here; ours comes from $MULTID_BASE_DIR or ./artifacts at the repo root
(scripts also take --base_dir). Nothing is created at import time.
"""

from multid.config import default_base_dir

BASE_DIR = str(default_base_dir()) + "/"
