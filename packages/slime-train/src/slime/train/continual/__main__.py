"""Entry point: ``python -m slime.train.continual --profile cpu-small --out DIR``."""

import sys

from slime.train.continual.suite import main

sys.exit(main())
