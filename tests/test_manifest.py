"""Manifest decoding: BTS, DASH timelines and templates (property-tested against a plain
reference expansion), and hostile input that must end in a clear error."""

from __future__ import annotations

import base64
import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidalq.errors import ManifestError, PreviewOnly
from tidalq.upstream.manifest import (
    MAX_SEGMENTS,
    DashStream,
    decode_base64,
    parse_bts,
    parse_mpd,
    parse_playback,
)

NS = 'xmlns="urn:mpeg:dash:schema:mpd:2011"'


def mpd(timeline: str, media: str = "seg-$Number$.mp4", extra: str = "",
        base: str = "https://cdn.example/a/b/?sig=XYZ", duration: str = "PT10S") -> str:
    return (f'<MPD {NS} mediaPresentationDuration="{duration}"><Period><BaseURL>{base}</BaseURL>'
            f'<AdaptationSet><Representation id="FLAC" bandwidth="900" codecs="flac"'
            f' audioSamplingRate="44100"><SegmentTemplate timescale="1000"'
            f' initialization="init.mp4" media="{media}" startNumber="1" {extra}>'
            f"{timeline}</SegmentTemplate></Representation></AdaptationSet></Period></MPD>")


def test_bts_decodes_urlsafe_unpadded() -> None:
    doc = {"mimeType": "audio/flac", "codecs": "flac", "encryptionType": "NONE",
           "urls": ["https://cdn.example/x.flac?token=a+b/c"]}
    text = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    stream = parse_bts(decode_base64(text))
    assert stream.url == doc["urls"][0] and stream.codec == "flac"


@pytest.mark.parametrize("doc", [
    {"encryptionType": "OLD_AES", "urls": ["https://x/y"]},
    {"encryptionType": "NONE", "urls": []},
    {"encryptionType": "NONE", "urls": ["file:///etc/passwd"]},
    {"encryptionType": "NONE", "urls": ["javascript:alert(1)"]},
])
def test_bts_refusals(doc: dict[str, object]) -> None:
    with pytest.raises(ManifestError):
        parse_bts(json.dumps(doc).encode())


def test_timeline_with_repeat_to_end_and_base_query() -> None:
    stream = parse_mpd(mpd('<SegmentTimeline><S t="0" d="4000" r="-1"/></SegmentTimeline>'))
    assert len(stream.segment_urls) == 3  # ceil(10 s / 4 s)
    assert stream.init_url == "https://cdn.example/a/b/init.mp4?sig=XYZ"
    assert stream.segment_urls[2] == "https://cdn.example/a/b/seg-3.mp4?sig=XYZ"


def test_template_without_timeline_and_identifiers() -> None:
    stream = parse_mpd(mpd("", media="$RepresentationID$/$Bandwidth$/$Number%05d$-$Time$.m4s",
                           extra='duration="3000"'))
    assert [u.split("/b/")[1] for u in stream.segment_urls] == [
        "FLAC/900/00001-0.m4s?sig=XYZ", "FLAC/900/00002-3000.m4s?sig=XYZ",
        "FLAC/900/00003-6000.m4s?sig=XYZ", "FLAC/900/00004-9000.m4s?sig=XYZ"]


def reference(entries: list[tuple[int | None, int, int]], total: int) -> list[tuple[int, int]]:
    """The plain reading of the DASH spec, for comparison."""
    out, t = [], 0
    for i, (start, d, r) in enumerate(entries):
        if start is not None:
            t = start
        if r == -1:
            nxt = entries[i + 1][0] if i + 1 < len(entries) else None
            end = nxt if nxt is not None else total
            r = max(0, math.ceil((end - t) / d) - 1)
        for _ in range(r + 1):
            out.append((t, d))
            t += d
    return out


entry = st.tuples(st.none() | st.integers(0, 10**6), st.integers(1, 10**5), st.integers(0, 20))


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(entry, min_size=1, max_size=6), last_open=st.booleans(),
       start=st.integers(0, 50), total=st.integers(1, 5 * 10**6))
def test_timeline_matches_reference(entries: list[tuple[int | None, int, int]], last_open: bool,
                                    start: int, total: int) -> None:
    if last_open:
        entries[-1] = (entries[-1][0], entries[-1][1], -1)
    expected = reference(entries, total)
    if len(expected) > MAX_SEGMENTS:
        return
    xml = "".join(f'<S{"" if t is None else f" t={chr(34)}{t}{chr(34)}"} d="{d}" r="{r}"/>'
                  for t, d, r in entries)
    doc = mpd(f"<SegmentTimeline>{xml}</SegmentTimeline>", media="s-$Number$-$Time$",
              duration=f"PT{total / 1000}S").replace('startNumber="1"', f'startNumber="{start}"')
    stream = parse_mpd(doc)
    got = [u.split("/b/")[1].split("?")[0] for u in stream.segment_urls]
    assert got == [f"s-{start + i}-{t}" for i, (t, _) in enumerate(expected)]


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">'
                    for i in range(10)) + ']><MPD>&lol9;</MPD>')


@pytest.mark.parametrize("text", [
    "", "not xml", "<MPD", LAUGHS, "<html/>", f"<MPD {NS}/>",
    mpd('<SegmentTimeline><S d="1" r="999999999999"/></SegmentTimeline>'),
    mpd('<SegmentTimeline><S d="0" r="5"/></SegmentTimeline>'),
    mpd('<SegmentTimeline><S d="x"/></SegmentTimeline>'),
    mpd("", extra='duration="1"', duration="PT99999999S"),
    mpd('<SegmentTimeline><S d="100"/></SegmentTimeline>', base="file:///etc/"),
    mpd('<SegmentTimeline><S d="100"/></SegmentTimeline>', base="", ),
    "<MPD>" + "<a>" * 100_000 + "</a>" * 100_000 + "</MPD>",
])
def test_hostile_manifests_end_in_a_clear_error(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(ManifestError):
        parse_mpd(text)
    assert time.monotonic() - start < 2


def test_playback_preview_and_unknown_types() -> None:
    with pytest.raises(PreviewOnly):
        parse_playback({"assetPresentation": "PREVIEW", "manifest": ""})
    with pytest.raises(ManifestError, match="unknown manifest type"):
        parse_playback({"manifestMimeType": "video/x-weird", "manifest": "e30"})
    with pytest.raises(ManifestError):
        parse_playback({"manifestMimeType": "application/vnd.tidal.bts", "manifest": "!!!"})


def test_dash_stream_keeps_codec_and_rate() -> None:
    stream = parse_mpd(mpd('<SegmentTimeline><S d="5000" r="1"/></SegmentTimeline>'))
    assert isinstance(stream, DashStream) and stream.codec == "flac"
    assert stream.sample_rate == 44100
