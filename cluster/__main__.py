"""``python -m cluster``: the local multi-replica run (see :mod:`cluster.local`)."""

import sys

from cluster.local import main

sys.exit(main())
