"""`python -m tigo_execd` is the same as the `tigo-execd` console script."""

import sys

from tigo_execd.cli import main

sys.exit(main())
