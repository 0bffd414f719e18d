"""The progress lines of long work on the command line (decoding a dataset into the cache, an epoch of
cxrnets.train, scoring images with cxrnets.predict): how far, how fast, and about how long is left."""

from __future__ import annotations

PROGRESS_SECONDS = 30.0  # at most this long between two progress lines


def speed_and_time_left(done: int, total: int, seconds: float) -> str:
    """"N images/s, ~T left" for `done` of `total` images in `seconds`: the time left at the speed so far."""
    speed = done / max(seconds, 1e-9)
    if done >= total:
        return f"{speed:.1f} images/s"
    if speed == 0:
        return f"{speed:.1f} images/s, time left unknown"
    return f"{speed:.1f} images/s, ~{duration((total - done) / speed)} left"


def duration(seconds: float) -> str:
    """"42 s", "3 min", "1 h 05 min": rounded to what a person waiting needs."""
    if seconds < 60:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
