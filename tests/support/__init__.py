"""What the tests share and are not tests themselves: real servers, child processes, the stand-ins
for taptap and Telegraf, generators of input, and the paths of this checkout.

Imported as `support.<module>` (setup.cfg puts `tests/` on the path); conftest.py holds only
fixtures.
"""
