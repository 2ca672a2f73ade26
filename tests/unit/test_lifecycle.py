from __future__ import annotations

from schemas.events import Category, Lifecycle
from streaming.lifecycle import EventTracker, Step

Q = Category.QR_CODE


def _run(scores: list[float]) -> list[tuple[str, int, float, float]]:
    tr = EventTracker("s1", "m1", {Q: 0.6}, hysteresis=0.2)
    out = []
    for i, sc in enumerate(scores):
        out += tr.push(Step(2.0 * i, 2.0 * i + 2, {Q: sc}))
    out += tr.close_all()
    return [(e.lifecycle.value, e.revision, e.window.start_s, e.window.end_s) for e in out]


def test_open_update_close_with_hysteresis():
    assert _run([0.1, 0.7, 0.5, 0.45, 0.3, 0.1]) == [
        ("started", 0, 2.0, 4.0),
        ("updated", 1, 2.0, 6.0),  # 0.5 is under the threshold but over threshold - hysteresis
        ("updated", 2, 2.0, 8.0),
        ("ended", 3, 2.0, 8.0),  # 0.3 < 0.4: closes
    ]


def test_below_threshold_never_opens_and_end_of_stream_closes():
    assert _run([0.1, 0.59, 0.3]) == []
    assert _run([0.9, 0.9]) == [("started", 0, 0.0, 2.0), ("updated", 1, 0.0, 4.0), ("ended", 2, 0.0, 4.0)]


def test_ids_are_deterministic_and_shared_across_the_lifecycle():
    def ids() -> list[str]:
        tr = EventTracker("cam", "m1", {Q: 0.5})
        evs = tr.push(Step(4.0, 6.0, {Q: 0.9})) + tr.push(Step(6.0, 8.0, {Q: 0.1}))
        assert [e.lifecycle for e in evs] == [Lifecycle.STARTED, Lifecycle.ENDED]
        return [e.event_id for e in evs]

    a, b = ids(), ids()
    assert a == b and a[0] == a[1]
    other = EventTracker("cam", "m2", {Q: 0.5}).push(Step(4.0, 6.0, {Q: 0.9}))[0].event_id
    assert other != a[0]


def test_a_low_threshold_still_closes():
    tr = EventTracker("s1", "m1", {Q: 0.04}, hysteresis=0.15)
    evs = tr.push(Step(0.0, 2.0, {Q: 0.2})) + tr.push(Step(2.0, 4.0, {Q: 0.001}))
    assert [e.lifecycle for e in evs] == [Lifecycle.STARTED, Lifecycle.ENDED]
