"""``python -m graphile_worker_utils``: the command line (see :mod:`graphile_worker_utils.cli`)."""

import sys

from graphile_worker_utils._script import script

sys.exit(script())
