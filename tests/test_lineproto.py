"""lineproto's exact output at its edges: what a mutation of one token would change (see
scripts/mutation.sh); the hostile inputs are in test_convert.py and test_threat_model.py."""

from __future__ import annotations

import pytest

from tigo_execd import lineproto


@pytest.mark.parametrize("name", ["", "#comment", "a\\b", "a\nb"])
def test_a_refused_measurement_name_says_what_a_name_must_be(name):
    with pytest.raises(ValueError) as refused:
        lineproto.measurement(name)
    assert str(refused.value) == (f"invalid measurement name {name!r}: it must be non-empty, must not "
                                  "start with '#' and must not contain control characters or backslashes")


def test_booleans_are_true_and_false():
    assert (lineproto.field_value(True), lineproto.field_value(False)) == ("true", "false")
    assert lineproto.line("m", {}, {"on": False, "up": True}) == "m on=false,up=true\n"


def test_a_line_without_a_timestamp_ends_at_its_fields():
    assert lineproto.line("m", {"t": "v"}, {"f": 1}) == "m,t=v f=1i\n"
    assert lineproto.line("m", {"t": "v"}, {"f": 1}, 0) == "m,t=v f=1i 0\n"
