"""``python -m client IMG...``: the same as the ``detect`` console script."""

import sys

from client.cli import main

sys.exit(main())
