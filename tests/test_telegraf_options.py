"""The two lists of Telegraf's option names agree: the one doctor ships
(tigo_execd/data/telegraf-plugin-options.json) and the tests' stand-in's own
(tests/data/telegraf-options-from-source.json), each derived from Telegraf's source on its own."""

from __future__ import annotations

import json

from support import telegraf_harness as th
from support.paths import ROOT

SHIPPED = ROOT / "tigo_execd" / "data" / "telegraf-plugin-options.json"


def test_doctor_knows_every_option_telegraf_reads_and_accepts_nothing_telegraf_refuses():
    shipped = {k: set(v) for k, v in json.loads(SHIPPED.read_text()).items() if not k.startswith("_")}
    read, accepted = th.options_read(), th.known_options()
    assert shipped.keys() == read.keys()
    for kind, names in shipped.items():
        assert read[kind] <= names, f"{kind}: doctor calls unknown what Telegraf reads: {read[kind] - names}"
        assert names <= set(accepted[kind]), f"{kind}: doctor passes what Telegraf refuses: " \
                                             f"{names - set(accepted[kind])}"


def test_the_stand_in_refuses_a_name_telegraf_does_not_know_and_takes_an_ignored_one():
    known = th.known_options()
    assert th.unknown_options("inputs.execd", {"command": [], "comand": []}, known) == ["comand"]
    assert th.unknown_options("outputs.mqtt", {"buffer_strategy": "memory", "v5": {"qos": 1}}, known) == [
        "v5.qos"]
    assert th.unknown_options("agent", {"alias": "x"}, known) == ["alias"]
