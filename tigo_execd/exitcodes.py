"""Exit codes of every tigo-execd command, in one place: scripts, systemd and Telegraf read them.

0/1/2 are the checks' verdicts (a health check's OK/WARN/CRIT, doctor's pass/fail); failures of a
command itself use the BSD sysexits.h values, so no failure can be mistaken for a verdict.
"""

from __future__ import annotations

OK = 0           # success; a check: OK, nothing failed
WARN = 1         # a check: WARN (watchdog --once), something failed (doctor)
CRIT = 2         # a check: CRIT (watchdog --once)
INFLUX_DOWN = 2  # heal, faults: InfluxDB cannot be read now (faults: nor its database, credentials);
                 # heal wrote nothing more: run it again later
USAGE = 64       # EX_USAGE: bad command line or settings (never a health verdict)
DATAERR = 65     # EX_DATAERR: the input is not what it must be (barcode check digit)
NOINPUT = 66     # EX_NOINPUT: an input cannot be opened (run: --jsonl/--replay file, the taptap program)
UNAVAILABLE = 69  # EX_UNAVAILABLE: InfluxDB cannot be reached (nodes, rollup)
SOFTWARE = 70    # EX_SOFTWARE: InfluxDB rejected a query (nodes, rollup, heal)
CANTCREAT = 73   # EX_CANTCREAT: an output file cannot be written (layout --output)
NOPERM = 77      # EX_NOPERM: InfluxDB refused the credentials (nodes, rollup, heal; rollup: no right to
                 # create its retention policy or continuous queries)
