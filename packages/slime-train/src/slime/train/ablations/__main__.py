"""Entry point: ``python -m slime.train.ablations --profile cpu-small --out DIR``."""

import sys

from slime.train.ablations.suite import main

sys.exit(main())
