"""Failed-attempt throttling."""

from __future__ import annotations

from telehealth.throttle import Throttle


def test_the_limit_th_failure_throttles_until_the_oldest_leaves_the_window() -> None:
    t = Throttle(limit=3, window_s=60)
    for at in (0.0, 10.0, 20.0):
        assert t.retry_after("a@b.c", at) == 0
        t.failed("a@b.c", at)
    assert t.retry_after("a@b.c", 30.0) == 30.0  # the failure at 0 leaves at 60
    assert t.retry_after("x@y.z", 30.0) == 0  # other keys are not affected
    assert t.retry_after("a@b.c", 60.0) == 0


def test_success_forgets_the_failures() -> None:
    t = Throttle(limit=2, window_s=60)
    t.failed("k", 0.0)
    t.succeeded("k")
    t.failed("k", 1.0)
    assert t.retry_after("k", 2.0) == 0


def test_key_count_is_bounded() -> None:
    t = Throttle(limit=1, window_s=60, max_keys=2)
    for key in ("a", "b", "c"):
        t.failed(key, 0.0)
    assert t.retry_after("a", 1.0) == 0  # forgotten, the oldest
    assert t.retry_after("c", 1.0) > 0
