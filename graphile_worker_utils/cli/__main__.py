"""``python -m graphile_worker_utils.cli``: the same as ``python -m graphile_worker_utils``."""

import sys

from graphile_worker_utils.cli import script

sys.exit(script())
