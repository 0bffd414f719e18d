import pytest

from cxrnets.progress import duration, speed_and_time_left


@pytest.mark.parametrize("done, total, seconds, said", [
    (500, 21165, 2.5, "200.0 images/s, ~2 min left"),  # dataset 1 at its first 500 images
    (100, 400, 10.0, "10.0 images/s, ~30 s left"),
    (1000, 250_600, 10.0, "100.0 images/s, ~42 min left"),
    (100, 1_000_100, 10.0, "10.0 images/s, ~27 h 47 min left"),
    (400, 400, 8.0, "50.0 images/s"),  # done: no time left to give
    (0, 400, 0.0, "0.0 images/s, time left unknown"),
])
def test_a_progress_line_says_how_fast_and_about_how_long_is_left(done, total, seconds, said):
    assert speed_and_time_left(done, total, seconds) == said


def test_a_duration_is_rounded_to_what_a_person_waiting_needs():
    assert [duration(s) for s in (0.2, 59.4, 89, 3599, 3600, 3 * 3600 + 5 * 60)] == [
        "1 s", "59 s", "1 min", "1 h 00 min", "1 h 00 min", "3 h 05 min"]
