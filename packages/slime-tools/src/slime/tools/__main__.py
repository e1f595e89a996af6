"""``python -m slime.tools visualize|export|package ...``."""

import sys

from slime.tools.cli import main

sys.exit(main())
