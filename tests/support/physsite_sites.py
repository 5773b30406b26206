"""The physical test sites `tigo-execd faults` is judged on (tests/test_faults_physical.py) and the
watchdog's analysis runs on (tests/test_watchdog_faults.py): each site's roof, weather and week, and
the conditions injected into it."""

from __future__ import annotations

from support import physsite as ps

C = ps.Condition
ESE, WSW = ps.Face("ese", 112, 30), ps.Face("wsw", 248, 30)
SSW = ps.Face("ssw", 195, 35)
EAST, SOUTH, WEST = ps.Face("east", 90, 35), ps.Face("south", 180, 35), ps.Face("west", 270, 35)
# December: the next row of houses takes the beam below 12 degrees of sun
ESE_ROW, WSW_ROW = ps.Face("ese", 112, 30, horizon=12), ps.Face("wsw", 248, 30, horizon=12)
AFTERNOON_CHIMNEY = (200.0, 300.0, 40.0)   # azimuth from, to, below this elevation

TWO_FACES = ps.roof(4609, {ESE: 8, WSW: 8})  # ESE nodes 2-9, WSW nodes 10-17
SITES = {
    "one face, TS4-A-O/-S mix": ps.Site("mix", ps.roof(4609, {SSW: 8}, monitor_every=2), "summer", 6),
    "two faces, one gateway": ps.Site("two", TWO_FACES, "summer", 7),
    "three faces, two gateways": ps.Site("three", ps.roof(4609, {EAST: 6, SOUTH: 6})
                                         + ps.roof(4610, {WEST: 6}), "june-clouds", 6),
    "two faces, winter": ps.Site("winter", ps.roof(4609, {ESE_ROW: 8, WSW_ROW: 8}), "winter", 7),
    "two faces, overcast": ps.Site("overcast", TWO_FACES, "overcast", 7),
}
INJECTED = {
    "one face, TS4-A-O/-S mix": dict(
        **{"4609_3": C("diode", day=1), "4609_4": C("soiling", size=0.25),
           "4609_6": C("open", day=3, hour=15), "4609_8": C("chimney", sun=AFTERNOON_CHIMNEY)}),
    "two faces, one gateway": dict(
        **{"4609_3": C("diode", day=1), "4609_5": C("soiling", size=0.25),
           "4609_7": C("chimney", sun=AFTERNOON_CHIMNEY), "4609_11": C("stuffy"),
           "4609_13": C("open", day=4, hour=15), "4609_15": C("radio", size=0.5)}),
    "three faces, two gateways": dict(
        **{"4609_2": C("diode"), "4609_9": C("soiling", size=0.25), "4610_3": C("stuffy"),
           "4610_5": C("radio", size=0.5)}),
    # in December sun a module without air behind it runs 10-14 degC hotter than its peers: under
    # hot_delta_c, so poor ventilation is no winter condition here
    "two faces, winter": dict(
        **{"4609_3": C("diode", day=1), "4609_5": C("soiling", size=0.25),
           "4609_7": C("chimney", sun=(180.0, 240.0, 25.0)), "4609_13": C("open", day=4, hour=16),
           "4609_15": C("radio", size=0.5)}),
}
