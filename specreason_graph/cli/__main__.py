"""``python -m specreason_graph.cli``: the ``specreason`` command."""

import sys

from specreason_graph.cli import main

sys.exit(main())
