"""The ingest: `tigo-execd run`, the long-running job under Telegraf that must never stop.

taptap's output comes from a source (sources.py, or the RS-485 bridge in bridge.py), is parsed and
becomes a line in convert.py, and is written to stdout by output.py; run.py wires them. May import
the floor, `bus` (the serial/TCP feeds the bridge reads) and `identity` (barcodes and names for the
tags), nothing else.
"""
