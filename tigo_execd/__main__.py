"""`python -m tigo_execd` is the same as the `tigo-execd` console script.

SIGINT and SIGTERM are blocked before anything else is imported; cli.main handles them once the
command's modules are imported.
"""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

import sys  # noqa: E402  (after the signals are blocked)

from tigo_execd.cli import main  # noqa: E402

sys.exit(main())
