"""The site's location and the sun's elevation over it (astral): daylight for the checks.

The one home of both the watchdog's and `faults`' use of the location.
"""

from __future__ import annotations

from datetime import UTC, datetime


def check_location(latitude: float | None, longitude: float | None) -> None:
    """Raise ValueError unless both are given and in range, or neither."""
    if (latitude is None) != (longitude is None):
        raise ValueError("--latitude and --longitude go together")
    if latitude is not None and longitude is not None and not (-90 <= latitude <= 90 and
                                                               -180 <= longitude <= 180):
        raise ValueError("--latitude must be within -90..90 and --longitude within -180..180")


def elevations(latitude: float, longitude: float, start_s: float, step_s: float, count: int) -> list[float]:
    """The sun's elevation in degrees at start_s, start_s + step_s, ... (count values)."""
    from astral import Observer  # imported when needed: `run` never needs it
    from astral.sun import elevation

    where = Observer(latitude, longitude)
    return [float(elevation(where, datetime.fromtimestamp(start_s + i * step_s, UTC)))
            for i in range(count)]


def elevation(latitude: float, longitude: float, at_s: float) -> float:
    """The sun's elevation in degrees at one time."""
    return elevations(latitude, longitude, at_s, 0, 1)[0]
