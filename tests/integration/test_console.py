"""The operator console in a real browser (Debian's chromium driven by Playwright) over Apache Kafka:
a stream with a QR code goes through a worker, its event card appears in the open page without a
reload, its still is a real JPEG in which the QR code decodes, and the category filter hides it.
Every thumbnail reference resolves to the still of that very event revision."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request

import cv2
import numpy as np
import pytest

from consumers.clients import ensure_topics, make_producer, started
from consumers.console.serve import serve
from consumers.publish import publish_stream
from consumers.stills import fetch_still
from consumers.worker import Worker
from models.registry import SHIPPED
from schemas.events import RiskEvent
from streaming.synth import Scenario, encode_segments
from streaming.synth.scenario import QrOverlay, Scene
from tests.conftest import SMALL
from tests.integration.conftest import fresh_settings

PAYLOAD = "https://pay.example/offplatform"


def _chromium() -> str:
    path = shutil.which("chromium")
    assert path, "the console test needs Debian's chromium (apt-get install chromium; .ci/run does)"
    return path


def _qr_stream() -> list:
    sc = Scenario(
        name="console-qr", seed=5, duration_s=8.0,
        encoding=SMALL.model_copy(update={"width": 640, "height": 360}),
        scenes=(Scene(start_s=0, kind="photo", source="astronaut", motion="pan"),),
        overlays=(QrOverlay(start_s=0.0, end_s=8.0, size=0.4, payload=PAYLOAD),),
    )  # fmt: skip
    return encode_segments(sc)[1]


async def test_a_qr_event_appears_live_with_its_still_and_the_filter_hides_it(kafka_broker, tmp_path):
    from playwright.async_api import async_playwright

    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    segs = _qr_stream()
    urls: list[str] = []
    console = asyncio.create_task(serve(s, "127.0.0.1", 0, on_ready=urls.append))
    worker = Worker(s, SHIPPED, broker_has_transactions=True)
    stop, ready = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(worker.run(stop, ready))
    shot = tmp_path / "console.png"
    try:
        await asyncio.wait_for(ready.wait(), 60)
        while not urls:
            assert not console.done(), console.exception()
            await asyncio.sleep(0.1)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=_chromium())
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                await page.goto(urls[0])
                assert await page.locator(".card").count() == 0  # opened before the stream exists
                async with started(make_producer(s), s) as p:
                    await publish_stream(p, s, "cam-qr", iter(segs))
                card = page.locator('.card[data-category="qr_code"][data-stream="cam-qr"]')
                await card.wait_for(state="visible", timeout=120_000)  # no reload: the live feed
                img = card.locator("img.still")
                await img.wait_for(state="visible", timeout=30_000)
                src = await img.get_attribute("src")
                assert src and src.startswith("/stills/")
                jpeg = await asyncio.to_thread(lambda: urllib.request.urlopen(urls[0] + src[1:]).read())
                assert jpeg[:3] == b"\xff\xd8\xff"
                frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert frame is not None and max(frame.shape[:2]) <= s.evidence_max_side
                text, _, _ = cv2.QRCodeDetector().detectAndDecode(frame)
                assert text == PAYLOAD  # the still shows the QR code, readable
                assert await page.locator("#timelines .timeline[data-stream='cam-qr'] svg rect").count() >= 1
                # the student decided this one: no example to allow-list it against, so no "not a risk?"
                assert await card.locator(".replay-toggle").is_visible()
                assert not await card.locator(".allow-toggle").is_visible()
                await page.select_option("#f-category", "text_lexicon")
                await card.wait_for(state="hidden", timeout=5000)
                await page.select_option("#f-category", "qr_code")
                await card.wait_for(state="visible", timeout=5000)
            except BaseException:
                await page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the page: {shot}")
                raise
            finally:
                await browser.close()
        raw = await asyncio.to_thread(lambda: urllib.request.urlopen(urls[0] + "api/state").read())
        events = [RiskEvent.model_validate(m["event"]) for m in json.loads(raw)]
        cited = [e for e in events if e.evidence.thumbnail_ref]
        assert cited and all(e.category == "qr_code" for e in cited)
        for e in cited:  # each reference is exactly the record of that event revision's still
            assert e.evidence.thumbnail_ref is not None
            head, still = await fetch_still(s, e.evidence.thumbnail_ref)
            assert (head.event_id, head.revision, head.category) == (e.event_id, e.revision, "qr_code")
            assert still[:3] == b"\xff\xd8\xff" and len(still) <= s.evidence_max_bytes
            assert any(r.label == PAYLOAD for r in head.regions)  # the box is the decoded code
    finally:
        stop.set()
        await run
        console.cancel()
        await asyncio.gather(console, return_exceptions=True)


@pytest.mark.parametrize("ref", ["kafka://nope/0/0", "kafka://x/1", "http://x/0/0"])
async def test_a_reference_to_nothing_is_a_clear_error(kafka_broker, ref):
    from consumers.errors import BrokerError
    from schemas.errors import InvalidMessageError

    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    with pytest.raises((BrokerError, InvalidMessageError)):
        await fetch_still(s, ref.replace("nope", s.topic_snapshots), timeout_ms=2000)
