"""Manifests, pure (no I/O): what to fetch for one track.

- BTS (``application/vnd.tidal.bts``): base64 JSON with ``urls``, ``codecs``, ``mimeType``
  and ``encryptionType`` (only ``NONE`` can be downloaded).
- DASH (``application/dash+xml``): an MPD with one FLAC Representation and a
  ``SegmentTemplate``, with or without a ``SegmentTimeline``; expanded to the init URL and
  the ordered media segment URLs.

Hostile input ends in :class:`~tidalq.errors.ManifestError`, never a hang or unbounded
memory: sizes, segment counts and URL schemes are bounded, DTDs are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from tidalq.errors import ManifestError, PreviewOnly
from tidalq.terms import Quality

MAX_MANIFEST_BYTES = 1 << 20
MAX_SEGMENTS = 100_000


@dataclass(frozen=True)
class DirectStream:
    """One file to fetch as it is."""

    url: str
    codec: str
    mime_type: str


@dataclass(frozen=True)
class DashStream:
    """An init segment and media segments to fetch in order and remux."""

    init_url: str
    segment_urls: tuple[str, ...]
    codec: str
    sample_rate: int | None


Stream = DirectStream | DashStream


@dataclass(frozen=True)
class Served:
    """What the upstream will actually deliver for a track."""

    stream: Stream
    quality: Quality
    bit_depth: int | None
    sample_rate: int | None
    replay_gain: dict[str, float]


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    if len(text) > MAX_MANIFEST_BYTES * 2:
        raise ManifestError("manifest is too large")
    cleaned = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ManifestError(f"manifest is not valid base64: {exc}") from exc


def check_url(url: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).netloc:
        raise ManifestError(f"manifest holds a URL that is not http(s): {str(url)[:80]!r}")
    return url


def parse_bts(raw: bytes) -> DirectStream:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"BTS manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError("BTS manifest is not an object")
    encryption = doc.get("encryptionType", "NONE")
    if encryption != "NONE":
        raise ManifestError(f"the stream is encrypted ({encryption}); it cannot be downloaded")
    urls = doc.get("urls")
    if not isinstance(urls, list) or not urls:
        raise ManifestError("BTS manifest has no urls")
    return DirectStream(check_url(urls[0]), str(doc.get("codecs", "")).lower(),
                        str(doc.get("mimeType", "")))


# -- DASH ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?"
                       r"(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


MAX_DURATION_S = 7 * 86400.0  # no track lasts a week


def parse_iso_duration(text: str | None) -> float | None:
    if not text:
        return None
    m = _DURATION.match(text.strip())
    if not m:
        raise ManifestError(f"bad ISO 8601 duration {text[:40]!r}")
    d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    seconds = d * 86400 + h * 3600 + mi * 60 + s
    if not seconds <= MAX_DURATION_S:  # also catches inf and nan from 400-digit numbers
        raise ManifestError(f"ISO 8601 duration {text[:40]!r} is out of range")
    return seconds


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    return next((c for c in el if _local(c.tag) == name), None)


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def resolve_url(base: str, ref: str) -> str:
    """urljoin, but a relative reference without a query keeps the base's query (signed
    CDN tokens live there)."""
    joined = urljoin(base, ref)
    base_query = urlsplit(base).query
    if base_query and "?" not in ref and not urlsplit(ref).scheme:
        parts = urlsplit(joined)
        joined = urlunsplit((parts.scheme, parts.netloc, parts.path, base_query, parts.fragment))
    return joined


_TEMPLATE = re.compile(r"\$(Number|Time|RepresentationID|Bandwidth)(%0(\d+)d)?\$|\$\$")


def fill_template(template: str, number: int, time: int, rep_id: str, bandwidth: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, width = m.group(1), m.group(3)
        value: object = {"Number": number, "Time": time, "RepresentationID": rep_id,
                         "Bandwidth": bandwidth}[name]
        if width and name in ("Number", "Time"):
            return f"{int(str(value)):0{min(int(width), 32)}d}"
        return str(value)

    return _TEMPLATE.sub(sub, template)


def _int_attr(el: ET.Element, name: str, default: int | None = None) -> int:
    raw = el.get(name)
    if raw is None:
        if default is None:
            raise ManifestError(f"SegmentTemplate lacks {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ManifestError(f"{name}={raw[:20]!r} is not an integer") from None
    if abs(value) > 2**62:
        raise ManifestError(f"{name} is out of range")
    return value


def expand_timeline(timeline: ET.Element, total_ticks: float | None) -> list[tuple[int, int]]:
    """(start time, duration) of every segment of a SegmentTimeline."""
    out: list[tuple[int, int]] = []
    t = 0
    entries = _children(timeline, "S")
    for index, s in enumerate(entries):
        t = _int_attr(s, "t", t)
        d = _int_attr(s, "d")
        r = _int_attr(s, "r", 0)
        if d <= 0:
            raise ManifestError("segment duration must be positive")
        if r < 0:
            next_t = _int_attr(entries[index + 1], "t", -1) if index + 1 < len(entries) else -1
            end = next_t if next_t >= 0 else total_ticks
            if end is None:
                raise ManifestError('r="-1" needs the presentation duration')
            r = max(0, math.ceil((end - t) / d) - 1)
        if len(out) + r + 1 > MAX_SEGMENTS:
            raise ManifestError(f"manifest lists more than {MAX_SEGMENTS} segments")
        for _ in range(r + 1):
            out.append((t, d))
            t += d
    return out


def parse_mpd(text: str | bytes, manifest_url: str | None = None) -> DashStream:
    """Init and media segment URLs of the first audio Representation of an MPD."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError("MPD is too large")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise ManifestError("MPD with a DTD or entities is refused")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ManifestError(f"MPD is not well-formed XML: {exc}") from exc
    if _local(root.tag) != "MPD":
        raise ManifestError("manifest is not an MPD")
    period = _child(root, "Period")
    adaptation = _child(period, "AdaptationSet")
    rep = _child(adaptation, "Representation")
    if period is None or adaptation is None or rep is None:
        raise ManifestError("MPD has no Period/AdaptationSet/Representation")
    base = manifest_url or ""
    for level in (root, period, adaptation, rep):
        base_el = _child(level, "BaseURL")
        if base_el is not None and base_el.text:
            base = resolve_url(base, base_el.text.strip())
    template = _merged_template(adaptation, rep)
    try:
        return _expand(root, period, rep, template, base)
    except (OverflowError, ValueError, ZeroDivisionError) as exc:  # numbers out of any range
        raise ManifestError(f"MPD numbers are out of range: {exc}") from exc


def _merged_template(adaptation: ET.Element, rep: ET.Element) -> ET.Element:
    outer, inner = _child(adaptation, "SegmentTemplate"), _child(rep, "SegmentTemplate")
    if outer is None and inner is None:
        raise ManifestError("MPD has no SegmentTemplate")
    merged = ET.Element("SegmentTemplate", {**(outer.attrib if outer is not None else {}),
                                            **(inner.attrib if inner is not None else {})})
    timeline = _child(inner, "SegmentTimeline")
    if timeline is None:
        timeline = _child(outer, "SegmentTimeline")
    if timeline is not None:
        merged.append(timeline)
    return merged


def _expand(root: ET.Element, period: ET.Element, rep: ET.Element, template: ET.Element,
            base: str) -> DashStream:
    timescale = _int_attr(template, "timescale", 1)
    start = _int_attr(template, "startNumber", 1)
    if timescale <= 0:
        raise ManifestError("timescale must be positive")
    media, init = template.get("media"), template.get("initialization")
    if not media or not init:
        raise ManifestError("SegmentTemplate lacks media or initialization")
    rep_id, bandwidth = rep.get("id", ""), rep.get("bandwidth", "")
    seconds = parse_iso_duration(period.get("duration")) \
        or parse_iso_duration(root.get("mediaPresentationDuration"))
    # rounded: 2.007 s × 1000 is 2007.0000000000002 in floating point, not one tick more
    total_ticks = round(seconds * timescale, 6) if seconds is not None else None
    timeline = _child(template, "SegmentTimeline")
    if timeline is not None:
        segments = expand_timeline(timeline, total_ticks)
    else:
        duration = _int_attr(template, "duration")
        if duration <= 0 or total_ticks is None:
            raise ManifestError("template without timeline needs duration and length")
        count = math.ceil(total_ticks / duration)
        if count > MAX_SEGMENTS:
            raise ManifestError(f"manifest lists more than {MAX_SEGMENTS} segments")
        segments = [(i * duration, duration) for i in range(count)]
    if not segments:
        raise ManifestError("MPD lists no segments")
    urls = tuple(check_url(resolve_url(base, fill_template(media, start + i, t, rep_id,
                                                            bandwidth)))
                 for i, (t, _) in enumerate(segments))
    init_url = check_url(resolve_url(base, fill_template(init, start, 0, rep_id, bandwidth)))
    rate = rep.get("audioSamplingRate")
    return DashStream(init_url, urls, (rep.get("codecs") or "flac").lower(),
                      int(rate) if rate and rate.isascii() and rate.isdigit() else None)


# -- playback info and manifest resources ----------------------------------------------------

def _quality(value: object) -> Quality:
    try:
        return Quality(str(value))
    except ValueError:
        return Quality.LOSSLESS


def parse_playback(info: dict[str, Any]) -> Served:
    """``/track/`` playback info -> what will be served. Raises PreviewOnly, ManifestError."""
    if info.get("assetPresentation", "FULL") != "FULL":
        raise PreviewOnly("only a 30-second preview is available at this quality")
    mime, manifest = info.get("manifestMimeType"), info.get("manifest")
    if not isinstance(manifest, str):
        raise ManifestError("playback info has no manifest")
    raw = decode_base64(manifest)
    stream: Stream
    if mime == "application/vnd.tidal.bts":
        stream = parse_bts(raw)
    elif mime == "application/dash+xml":
        stream = parse_mpd(raw)
    else:
        raise ManifestError(f"unknown manifest type {str(mime)[:60]!r}")
    gains = {k: float(info[k]) for k in ("trackReplayGain", "trackPeakAmplitude",
                                         "albumReplayGain", "albumPeakAmplitude")
             if isinstance(info.get(k), int | float)}
    return Served(stream, _quality(info.get("audioQuality")), _opt_int(info.get("bitDepth")),
                  _opt_int(info.get("sampleRate")), gains)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def manifest_attributes(payload: Any) -> dict[str, Any]:
    """``attributes`` of a ``/trackManifests/`` answer (``data.data`` or ``data``)."""
    node = payload
    for _ in range(2):
        if isinstance(node, dict) and "attributes" not in node and isinstance(
                node.get("data"), dict):
            node = node["data"]
    attrs = node.get("attributes") if isinstance(node, dict) else None
    if not isinstance(attrs, dict):
        raise ManifestError("manifest resource has no attributes")
    if attrs.get("trackPresentation", "FULL") != "FULL":
        raise PreviewOnly(f"only a preview is available ({attrs.get('previewReason', '?')})")
    return attrs
