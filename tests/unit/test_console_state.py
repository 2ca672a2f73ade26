"""The console's memory: events by id with their revisions, stills by reference, both bounded;
duplicates and unreadable records never reach a page."""

from __future__ import annotations

from consumers.console.state import ConsoleState, allow_command, replay_command, sse, still_url
from schemas.events import Category, Evidence, KnownExample, Lifecycle, MediaWindow, RiskEvent, make_event_id
from schemas.stills import StillHeaders


def _event(n: int, revision: int = 0, ref: str | None = None) -> RiskEvent:
    return RiskEvent(
        event_id=make_event_id("cam", float(n), Category.QR_CODE, "m"), revision=revision, stream_id="cam",
        category=Category.QR_CODE, lifecycle=Lifecycle.STARTED if revision == 0 else Lifecycle.UPDATED,
        window=MediaWindow(start_s=n, end_s=n + 2), score=0.9, threshold=0.5, model_version="m",
        evidence=Evidence(thumbnail_ref=ref),
    )  # fmt: skip


def _still_headers(e: RiskEvent) -> list[tuple[str, bytes]]:
    return StillHeaders(event_id=e.event_id, revision=e.revision, category="qr_code", media_s=1.0).to_kafka()


def test_events_keep_their_revisions_once_and_pages_hear_of_each_change():
    st = ConsoleState("snaps", max_events=100)
    heard: list[dict] = []
    st.listeners.append(heard.append)
    e0, e1 = _event(1), _event(1, 1, ref="kafka://snaps/2/7")
    for e in (e0, e1, e1):  # the second e1: an at-least-once duplicate
        st.add_event(e.model_dump_json().encode(), [("gopwatch-produced-ms", b"1000")], 999)
    assert [m["event"]["revision"] for m in st.snapshot()] == [0, 1]
    assert len(heard) == 2 and heard[1]["still_url"] == "/stills/2/7.jpg"
    assert heard[1]["replay"] == replay_command(e0.event_id, 1000, 1000)
    assert st.revisions_of(e0.event_id) == [e0.model_dump(mode="json"), e1.model_dump(mode="json")]
    st.add_event(b"{not json", [], 0)
    st.add_still(0, 1, b"\xff\xd8", [("gopwatch-still", b"evidence")])  # headers missing
    assert st.skipped == 2 and len(heard) == 2


def test_the_oldest_events_and_stills_go_first_past_the_bounds():
    st = ConsoleState("snaps", max_events=10, max_still_bytes=2500)
    for n in range(8):
        for r in range(2):
            st.add_event(_event(n, r).model_dump_json().encode(), [], 1000 + n)
    assert st.revisions <= 10 and len(st.events) == 5
    assert [m["event"]["window"]["start_s"] for m in st.snapshot()][::2] == [3, 4, 5, 6, 7]
    for n in range(4):
        st.add_still(0, n, bytes(1000), _still_headers(_event(n)))
    assert st.still(0, 0) is None and st.still(0, 1) is None and st.still(0, 3) == bytes(1000)
    assert st.still_bytes == 2000


def test_replay_commands_and_urls():
    cmd = replay_command("0123456789abcdef0123456789abcdef", 1_000_000, 1_090_000)
    assert cmd == (
        "gopwatch replay record --since 940000 --until 1150000 replay-01234567.gwr"
        " && gopwatch replay play replay-01234567.gwr"
    )
    assert still_url("kafka://gopwatch.snapshots/3/1234") == "/stills/3/1234.jpg"
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'


def test_only_the_knowledge_bases_pictured_events_get_the_not_a_risk_command():
    """A negative example suppresses the base's matches, not the student's scores: the command is
    offered where the event cites examples and has a still, and nowhere else."""
    near = (KnownExample(example_id="bbb", category="banned_stream_rebroadcast", similarity=0.93),)
    kb_event = _event(1, ref="kafka://snaps/2/7").model_copy(
        update={"evidence": Evidence(thumbnail_ref="kafka://snaps/2/7", nearest_examples=near)}
    )
    assert allow_command(kb_event) == (
        "gopwatch kb add --from-still kafka://snaps/2/7 --negative"
        f" --notes 'not a risk: event {kb_event.event_id}'"
    )
    no_still = kb_event.model_copy(update={"evidence": Evidence(nearest_examples=near)})
    assert allow_command(_event(1, ref="kafka://snaps/2/7")) is None and allow_command(no_still) is None
    for space in ("audio", "landmarks", "text"):  # a still's picture does not allow-list a sound or a line
        heard = tuple(n.model_copy(update={"space": space}) for n in near)
        by_sound = kb_event.model_copy(
            update={"evidence": kb_event.evidence.model_copy(update={"nearest_examples": heard})}
        )
        assert allow_command(by_sound) is None, space
    pictured = tuple(n.model_copy(update={"space": "visual"}) for n in near)
    by_picture = kb_event.model_copy(
        update={"evidence": kb_event.evidence.model_copy(update={"nearest_examples": pictured})}
    )
    assert allow_command(by_picture) == allow_command(kb_event)
    st = ConsoleState("snaps", max_events=10)
    st.add_event(kb_event.model_dump_json().encode(), [], 1000)
    assert st.snapshot()[0]["allow"] == allow_command(kb_event)
