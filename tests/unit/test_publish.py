"""The bridge's discovery of stream keys from nginx-rtmp's statistics page (no server needed)."""

from __future__ import annotations

import pytest

from consumers.errors import PublishError
from consumers.publish import MAX_STAT_BYTES, is_application_url, publishing_keys

STAT = b"""<?xml version="1.0" encoding="utf-8" ?>
<rtmp><nginx_version>1.22.1</nginx_version><server>
<application><name>live</name><live>
  <stream><name>cam-1</name><client><id>3</id><publishing/></client><publishing/><active/></stream>
  <stream><name>cam-2</name><client><id>5</id></client><active/></stream>
  <stream><name>cam-3</name><publishing/></stream>
</live></application>
<application><name>other</name><live><stream><name>x</name><publishing/></stream></live></application>
</server></rtmp>"""


def test_only_publishing_keys_of_the_named_application():
    assert publishing_keys(STAT, "live") == ["cam-1", "cam-3"]  # cam-2 has players, no publisher
    assert publishing_keys(STAT, "other") == ["x"]
    assert publishing_keys(STAT, "missing") == []


@pytest.mark.parametrize(
    "page, why",
    [
        (b"<html>502 Bad Gateway", "not XML"),
        (b"<rtmp>" + b" " * MAX_STAT_BYTES + b"</rtmp>", "over"),
        (b'<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><rtmp>&b;&unknown;</rtmp>', "not XML"),
    ],
)
def test_a_page_it_cannot_read_is_one_clear_error(page, why):
    with pytest.raises(PublishError, match=why):
        publishing_keys(page, "live")


def test_application_urls():
    assert is_application_url("rtmp://127.0.0.1:1935/live/*")
    assert not is_application_url("rtmp://127.0.0.1:1935/live/cam")
    assert not is_application_url("out/*")  # a path, not a live URL


def test_the_stat_page_must_be_http():
    from consumers.publish import _fetch

    with pytest.raises(PublishError, match="http"):
        _fetch("file:///etc/passwd", 1.0)
