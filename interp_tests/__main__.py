"""``python -m interp_tests``: the ``interp-tests`` command line."""

import sys

from .cli import main

sys.exit(main())
