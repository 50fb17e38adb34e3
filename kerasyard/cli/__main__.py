"""``python -m kerasyard.cli``: the ``kerasyard`` command."""

import sys

from . import main

sys.exit(main())
