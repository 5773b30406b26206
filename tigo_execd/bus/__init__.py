"""The RS-485 bus: USB adapters and TCP converters (feeds), the loopback relay taptap reads, raw
captures, reconnect policy, and `tigo-execd ports`. Imports only the floor.
"""
