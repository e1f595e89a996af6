"""``python -m slime.train ARGS...``: the ``slime`` command (:mod:`slime.train.console`)."""

import sys

from slime.train.console import main

sys.exit(main())
