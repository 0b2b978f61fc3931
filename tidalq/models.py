"""Values of tidalq and their JSON forms: job specs, jobs, failures, events, metadata.

Statuses, qualities and priorities, the words these are made of, live in
:mod:`tidalq.terms`.

The JSON shapes here are the contract of ``interface.md``: camelCase, the same on the
socket, in ``--json`` output and on the HTTP API. Parsing functions validate and raise
:class:`~tidalq.errors.InvalidInput` naming the offending field; nothing here does I/O.
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, TypedDict

from tidalq.errors import InvalidInput
from tidalq.terms import JobStatus, Priority, Quality

MAX_ID = 2**53 - 1  # JSON numbers beyond this lose precision in JavaScript clients
MAX_TEXT = 1024
MAX_ATTEMPTS_LIMIT = 100


JobType = Literal["track", "album", "playlist", "mix", "artist"]
ID_FIELDS: dict[str, str] = {"track": "trackId", "album": "albumId", "playlist": "playlistId",
                             "mix": "mixId", "artist": "artistId"}
# what an artist job may include (interface.md), and what it includes by default
RELEASE_KINDS = ("albums", "eps", "singles", "compilations", "appears-on")
DEFAULT_INCLUDE = ("albums", "eps", "singles")
_PLAYLIST_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12}$")
_MIX_ID = re.compile(r"^[0-9A-Za-z]{1,64}$")


class JobSpecJSON(TypedDict, total=False):
    forceOverwrite: bool
    include: list[str]
    playlistId: str
    mixId: str
    artistId: int
    type: str
    trackId: int
    albumId: int
    quality: str
    minQuality: str
    albumTitle: str
    artistName: str
    trackTitle: str


@dataclass(frozen=True)
class JobSpec:
    """What a user asked for: one track or one album at a quality."""

    type: JobType
    tidal_id: int | str  # a number, except a playlist's UUID and a mix's id
    quality: Quality = Quality.LOSSLESS
    min_quality: Quality | None = None
    album_title: str | None = None
    artist_name: str | None = None
    track_title: str | None = None
    force: bool = False  # replace what the library has, whatever it is (forceOverwrite)
    include: tuple[str, ...] = ()  # artist jobs: which releases (RELEASE_KINDS)
    # fields web clients send that tidalq keeps and echoes (see CLIENT_FIELDS)
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.type == "artist" and not self.include:  # what from_json gives it too
            object.__setattr__(self, "include", DEFAULT_INCLUDE)

    @property
    def dedupe_key(self) -> str:
        return f"{self.type}:{self.tidal_id}:{self.quality.value}"

    @property
    def number(self) -> int:
        """The numeric TIDAL id of a track, album or artist job."""
        return int(self.tidal_id)

    def to_json(self) -> JobSpecJSON:
        out: JobSpecJSON = {"type": self.type, "quality": self.quality.value}
        out[ID_FIELDS[self.type]] = self.tidal_id  # type: ignore[literal-required]
        if self.type == "artist":
            out["include"] = list(self.include)
        if self.min_quality is not None:
            out["minQuality"] = self.min_quality.value
        if self.album_title is not None:
            out["albumTitle"] = self.album_title
        if self.artist_name is not None:
            out["artistName"] = self.artist_name
        if self.track_title is not None:
            out["trackTitle"] = self.track_title
        if self.force:
            out["forceOverwrite"] = True
        out.update(self.extra)  # type: ignore[typeddict-item]
        return out

    @property
    def wants_musicbrainz(self) -> bool:
        return self.musicbrainz_release is not None or \
            self.extra.get("experimentalMusicBrainzTagging") is True

    @property
    def strict_musicbrainz(self) -> bool:
        return self.extra.get("strictMusicBrainzMatching") is True

    @property
    def musicbrainz_release(self) -> str | None:
        value = self.extra.get("musicBrainzReleaseId")
        return value if isinstance(value, str) and value else None

    @classmethod
    def from_json(cls, raw: object, default_quality: Quality = Quality.LOSSLESS) -> JobSpec:
        """Validate a client's ``job`` object; raises InvalidInput naming the field."""
        if not isinstance(raw, dict):
            raise InvalidInput("job must be an object", "job")
        # fields no version of tidalq knows are ignored: newer clients add fields
        kind = raw.get("type")
        if kind not in ID_FIELDS:
            raise InvalidInput(f"job.type must be one of {', '.join(ID_FIELDS)}", "job.type")
        id_field = ID_FIELDS[kind]
        tidal_id = _job_ref(kind, raw.get(id_field), f"job.{id_field}")
        quality = parse_quality(raw.get("quality", default_quality.value), "job.quality")
        min_q = raw.get("minQuality")
        return cls(
            type=kind,
            tidal_id=tidal_id,
            quality=quality,
            min_quality=None if min_q is None else parse_quality(min_q, "job.minQuality"),
            album_title=_optional_text(raw, "albumTitle"),
            artist_name=_optional_text(raw, "artistName"),
            track_title=_optional_text(raw, "trackTitle") if kind == "track" else None,
            force=_flag(raw, "forceOverwrite"),
            include=parse_include(raw.get("include")) if kind == "artist" else (),
            extra=_client_fields(raw),
        )


def _job_ref(kind: str, value: object, field_name: str) -> int | str:
    if kind == "playlist":
        if not isinstance(value, str) or not _PLAYLIST_ID.match(value):
            raise InvalidInput(f"{field_name} must be a playlist UUID", field_name)
        return value.lower()
    if kind == "mix":
        if not isinstance(value, str) or not _MIX_ID.match(value):
            raise InvalidInput(f"{field_name} must be a mix id (letters and digits)",
                               field_name)
        return value
    return parse_tidal_id(value, field_name)


def parse_include(value: object) -> tuple[str, ...]:
    """An artist job's release kinds: a list or a comma-separated string, or "all"."""
    if value is None:
        return DEFAULT_INCLUDE
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise InvalidInput("job.include must be a list of release kinds", "job.include")
    names = [i.strip().lower() for i in items if i.strip()]
    if names == ["all"]:
        return RELEASE_KINDS
    unknown = [n for n in names if n not in RELEASE_KINDS]
    if unknown or not names:
        raise InvalidInput(f"job.include: {', '.join(unknown) or 'nothing'} is not one of "
                           f"{', '.join(RELEASE_KINDS)} or all", "job.include")
    return tuple(k for k in RELEASE_KINDS if k in names)


def parse_tidal_id(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 17:
            value = int(value)
        else:
            raise InvalidInput(f"{field_name} must be a positive integer", field_name)
    if not 0 < value <= MAX_ID:
        raise InvalidInput(f"{field_name} must be a positive integer", field_name)
    return value


def parse_quality(value: object, field_name: str = "quality") -> Quality:
    try:
        return Quality(str(value).upper()) if isinstance(value, str) else Quality("?")
    except ValueError:
        names = ", ".join(q.value for q in Quality)
        raise InvalidInput(f"{field_name} must be one of {names}", field_name) from None


def parse_priority(value: object, field_name: str = "priority") -> Priority:
    try:
        return Priority(str(value).lower()) if isinstance(value, str) else Priority("?")
    except ValueError:
        raise InvalidInput(f"{field_name} must be high, normal or low", field_name) from None


def parse_status(value: object, field_name: str = "status") -> JobStatus:
    try:
        return JobStatus(value) if isinstance(value, str) else JobStatus("?")
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise InvalidInput(f"{field_name} must be one of {names}", field_name) from None


def parse_max_attempts(value: object, field_name: str = "maxAttempts") -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise InvalidInput(f"{field_name} must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}",
                           field_name)
    return value


# what the seed's web app sends beside the job's identity: kept, checked, echoed back
CLIENT_FIELDS: dict[str, type] = {
    "trackNumber": int, "trackCount": int, "coverUrl": str, "musicBrainzReleaseId": str,
    "experimentalMusicBrainzTagging": bool, "strictMusicBrainzMatching": bool,
    "targetArtistDir": str, "targetAlbumDir": str, "targetFilenameHint": str,
    "musicBrainzMatch": str,  # set by tidalq: what it matched and how
}


def _client_fields(raw: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, kind in CLIENT_FIELDS.items():
        value = raw.get(key)
        if value is None:
            continue
        wrong = isinstance(value, bool) != (kind is bool) or not isinstance(value, kind)
        if wrong or (kind is int and not 0 <= value <= MAX_ID) or \
                (kind is str and len(value) > MAX_TEXT):
            what = {bool: "true or false", int: "a whole number",
                    str: f"a string of at most {MAX_TEXT} characters"}[kind]
            raise InvalidInput(f"job.{key} must be {what}", f"job.{key}")
        kept[key] = value
    return kept


def _flag(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"job.{key} must be true or false", f"job.{key}")
    return value


def _optional_text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidInput(f"job.{key} must be a string of at most {MAX_TEXT} characters",
                           f"job.{key}")
    return value


_BASE36 = string.digits + string.ascii_lowercase


def new_job_id(now_ms: int | None = None) -> str:
    """``job-<epoch ms>-<9 base36 chars>``, as the seed's ids."""
    import secrets  # only the daemon makes ids: keep the CLI's start-up light

    stamp = now_ms if now_ms is not None else int(time.time() * 1000)
    return f"job-{stamp}-" + "".join(secrets.choice(_BASE36) for _ in range(9))


def now_ms() -> int:
    return int(time.time() * 1000)


# an entry's status once its job has ended: what was running stopped with the job, what
# had not started never will
_ENTRY_END = {JobStatus.CANCELLED: {"processing": "cancelled", "queued": "cancelled"},
              JobStatus.FAILED: {"processing": "failed", "queued": "skipped"},
              JobStatus.COMPLETED: {"processing": "skipped", "queued": "skipped"}}


def ended_entries(entries: list[dict[str, Any]], status: JobStatus
                  ) -> list[dict[str, Any]]:
    """A job's track entries as its status has them: when a job ends, every entry ends
    too (an entry's own state is stored as its attempt left it, on every backend)."""
    ends = _ENTRY_END.get(status)
    if not ends or not any(e.get("status") in ends for e in entries):
        return entries
    why = {"cancelled": "cancelled", "skipped": f"not started: the job {status.value}",
           "failed": "stopped: the job failed"}
    return [{**e, "status": ends[e["status"]], "error": e.get("error") or why[ends[e["status"]]]}
            if e.get("status") in ends else e for e in entries]


@dataclass
class Job:
    """A job as the store keeps it. ``token``/``lease_until_ms`` never leave the daemon."""

    id: str
    spec: JobSpec
    status: JobStatus = JobStatus.QUEUED
    priority: Priority = Priority.NORMAL
    progress: float = 0.0
    created_at: int = 0
    started_at: int | None = None
    completed_at: int | None = None
    updated_at: int = 0
    next_retry_at: int | None = None
    attempts: int = 0
    max_attempts: int = 3
    error: str | None = None
    failure_code: str | None = None
    track_progress: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    stalls: int = 0
    token: str | None = None
    lease_until_ms: int | None = None
    seq: int = 0
    worker: str | None = None  # "host:pid:instance" of the daemon holding the lease
    pause_requested: bool = False  # paused while processing: takes effect between tracks

    def copy(self) -> Job:
        return replace(self, track_progress=[dict(t) for t in self.track_progress],
                       result=None if self.result is None else dict(self.result))

    def to_json(self) -> dict[str, Any]:
        """The public job object of interface.md."""
        out: dict[str, Any] = {
            "id": self.id,
            "job": self.spec.to_json(),
            "status": self.status.value,
            "priority": self.priority.value,
            "progress": round(self.progress, 4),
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "updatedAt": self.updated_at,
            "nextRetryAt": self.next_retry_at,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "error": self.error,
            "failureCode": self.failure_code,
            "worker": self.worker if self.status is JobStatus.PROCESSING else None,
            "pauseRequested": self.pause_requested,
        }
        if self.spec.type == "artist":
            out["children"] = [e.get("jobId") for e in self.track_progress if e.get("jobId")]
            out["releases"] = self.track_progress
            out["result"] = self.result
        elif self.spec.type in ("album", "playlist", "mix"):
            tracks = ended_entries(self.track_progress, self.status)
            # the client's count until the daemon has listed the album (every page of it:
            # entries are stored whole), unknown (None) before: never a partial count
            out["trackCount"] = len(tracks) or self.spec.extra.get("trackCount") or None
            out["completedTracks"] = sum(1 for t in tracks if t.get("status") == "completed")
            out["failedTracks"] = sum(1 for t in tracks if t.get("status") == "failed")
            out["trackProgress"] = tracks
            if self.spec.type != "album":
                out["playlistPath"] = (self.result or {}).get("playlistPath")
                out["result"] = self.result
        else:
            out["result"] = self.result
        return out

    def to_record(self) -> dict[str, Any]:
        """Everything, for backends that persist the job as one document."""
        out = self.to_json()
        out.update(trackProgress=self.track_progress, result=self.result, stalls=self.stalls,
                   token=self.token, leaseUntil=self.lease_until_ms, seq=self.seq,
                   worker=self.worker)
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Job:
        spec = JobSpec.from_json(rec["job"])
        return cls(
            id=rec["id"], spec=spec, status=JobStatus(rec["status"]),
            priority=Priority(rec["priority"]), progress=float(rec["progress"]),
            created_at=rec["createdAt"], started_at=rec.get("startedAt"),
            completed_at=rec.get("completedAt"), updated_at=rec["updatedAt"],
            next_retry_at=rec.get("nextRetryAt"), attempts=rec["attempts"],
            max_attempts=rec["maxAttempts"], error=rec.get("error"),
            failure_code=rec.get("failureCode"), track_progress=rec.get("trackProgress") or [],
            result=rec.get("result"), stalls=rec.get("stalls", 0), token=rec.get("token"),
            lease_until_ms=rec.get("leaseUntil"), seq=rec.get("seq", 0),
            worker=rec.get("worker"), pause_requested=bool(rec.get("pauseRequested")),
        )


@dataclass(frozen=True)
class Claim:
    """A job handed to a worker, with the lease token that proves ownership."""

    job: Job
    token: str
    lease_until_ms: int


class LeaseState(StrEnum):
    """What a heartbeat learns about a lease."""

    HELD = "held"
    PAUSE = "pause"  # held, and the user asked to pause: stop between tracks, then release
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def holds(self) -> bool:
        return self in (LeaseState.HELD, LeaseState.PAUSE)


MAX_RETRY_AFTER_MS = 7 * 86400 * 1000


@dataclass(frozen=True)
class Failure:
    """One failed attempt, as the worker reports it to the store. A retry delay is kept
    within a week, whatever a server asked for: every store can hold it."""

    message: str
    code: str
    retryable: bool
    retry_after_ms: int | None = None

    def __post_init__(self) -> None:
        if self.retry_after_ms is not None:
            delay = self.retry_after_ms if self.retry_after_ms == self.retry_after_ms else 0
            object.__setattr__(self, "retry_after_ms",
                               int(min(max(0, delay), MAX_RETRY_AFTER_MS)))


@dataclass(frozen=True)
class Event:
    """One entry of the store's event feed. ``id`` is opaque and ordered per backend."""

    id: str
    job_id: str
    kind: str
    status: str
    progress: float
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "jobId": self.job_id, "type": self.kind, "status": self.status,
                "progress": self.progress, "at": self.at_ms}


@dataclass(frozen=True)
class Artist:
    id: int | None
    name: str
    main: bool = True


@dataclass(frozen=True)
class TrackMeta:
    """One track as the upstream describes it (``/info/`` or an album item)."""

    id: int
    title: str
    version: str | None
    duration_s: float
    track_number: int
    disc_number: int
    artists: tuple[Artist, ...]
    album_id: int | None
    album_title: str
    album_artist: str
    album_cover: str | None = None
    release_date: str | None = None
    isrc: str | None = None
    copyright: str | None = None
    explicit: bool = False
    upc: str | None = None
    track_total: int | None = None
    disc_total: int | None = None
    audio_quality: str | None = None
    replay_gain: float | None = None
    peak: float | None = None
    track_width: int = 2  # digits of the largest track number on this track's disc

    @property
    def full_title(self) -> str:
        """"Title (Version)" when the track has a version, as TIDAL shows it."""
        if self.version and self.version.lower() not in self.title.lower():
            return f"{self.title} ({self.version})"
        return self.title

    @property
    def artist_name(self) -> str:
        main = [a.name for a in self.artists if a.main] or [a.name for a in self.artists]
        return ", ".join(main) if main else self.album_artist


@dataclass(frozen=True)
class Collection:
    """A playlist or a mix: its tracks in order (videos left out, counted)."""

    kind: str  # "playlist" or "mix"
    id: str
    title: str
    tracks: tuple[TrackMeta, ...]
    videos: int = 0


@dataclass(frozen=True)
class Release:
    """One release of an artist's discography, classified as ``include`` names it."""

    album_id: int
    title: str
    kind: str  # one of RELEASE_KINDS


@dataclass(frozen=True)
class SearchHit:
    """One search result: what the table and the page show, and what `add` needs."""

    kind: str  # one of SEARCH_KINDS
    ref: int | str  # the id to add (a uuid for playlists)
    title: str
    artist: str | None = None
    year: str | None = None
    tracks: int | None = None
    quality: str | None = None  # the best the catalogue lists
    explicit: bool = False
    cover: str | None = None  # the catalogue's image id

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "id": self.ref, "title": self.title, "artist": self.artist,
                "year": self.year, "tracks": self.tracks, "quality": self.quality,
                "explicit": self.explicit, "cover": self.cover}


@dataclass(frozen=True)
class Discography:
    artist: str
    releases: tuple[Release, ...]
    complete: bool  # False: the server only offered its plain listing, capped at 100


@dataclass(frozen=True)
class AlbumMeta:
    """An album with all its tracks, judged complete per (disc, track number)."""

    id: int
    title: str
    artist: str
    cover: str | None
    release_date: str | None
    number_of_tracks: int
    number_of_volumes: int
    upc: str | None
    copyright: str | None
    tracks: tuple[TrackMeta, ...]


FOLLOW_KINDS = ("artist", "playlist", "mix", "favorites")
FAVORITE_KINDS = ("tracks", "albums", "playlists", "artists")


@dataclass
class Follow:
    """A followed artist, playlist or mix, or the TIDAL account's favourites: checked every
    ``follow_interval`` by one daemon.

    ``seen`` holds what was there at the last check (album ids of an artist, track ids of
    a playlist, ``"albums:789"`` keys of favourites): what is new is what is not in it.
    None before the first check.
    """

    id: str
    kind: str
    ref: int | str
    quality: Quality
    include: tuple[str, ...] = ()
    backfill: bool = False
    created_at: int = 0
    last_check_at: int | None = None
    last_outcome: str | None = None  # "ok: 2 new", "failed: …"
    failures: int = 0  # consecutive failed checks (they back off)
    checks: int = 0
    next_check_at: int = 0
    seen: list[int | str] | None = None
    title: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.ref}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "ref": self.ref,
                "quality": self.quality.value, "include": list(self.include),
                "backfill": self.backfill, "createdAt": self.created_at,
                "lastCheckAt": self.last_check_at, "lastOutcome": self.last_outcome,
                "failures": self.failures, "checks": self.checks,
                "nextCheckAt": self.next_check_at, "title": self.title,
                "seen": self.seen}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Follow:
        return cls(id=raw["id"], kind=raw["kind"], ref=raw["ref"],
                   quality=Quality(raw["quality"]), include=tuple(raw.get("include") or ()),
                   backfill=bool(raw.get("backfill")), created_at=raw.get("createdAt", 0),
                   last_check_at=raw.get("lastCheckAt"), last_outcome=raw.get("lastOutcome"),
                   failures=raw.get("failures", 0), checks=raw.get("checks", 0),
                   next_check_at=raw.get("nextCheckAt", 0), seen=raw.get("seen"),
                   title=raw.get("title"))

    @classmethod
    def parse(cls, raw: object, default_quality: Quality, now: int) -> Follow:
        """A client's follow request: ``{"kind", "id", "include"?, "quality"?, "backfill"?}``."""
        if not isinstance(raw, dict):
            raise InvalidInput("follow must be an object", "follow")
        kind = raw.get("kind")
        if kind not in FOLLOW_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(FOLLOW_KINDS)}", "kind")
        if kind == "favorites":
            return cls._favourites(raw, default_quality, now)
        spec = JobSpec.from_json({"type": kind, ID_FIELDS[kind]: raw.get("id"),
                                  "include": raw.get("include"),
                                  "quality": raw.get("quality", default_quality.value)},
                                 default_quality)
        backfill = raw.get("backfill", False)
        if not isinstance(backfill, bool):
            raise InvalidInput("backfill must be true or false", "backfill")
        import secrets  # only the daemon makes ids

        return cls(id="follow-" + secrets.token_hex(5), kind=kind, ref=spec.tidal_id,
                   quality=spec.quality, include=spec.include, backfill=backfill,
                   created_at=now, next_check_at=now)

    @classmethod
    def _favourites(cls, raw: dict[str, Any], default_quality: Quality, now: int) -> Follow:
        """The account's favourites: what is there now is downloaded too unless
        ``backfill`` is false (they are the music the person chose to keep)."""
        include = raw.get("include") or list(FAVORITE_KINDS)
        if isinstance(include, str):
            include = [k.strip() for k in include.split(",") if k.strip()]
        if not isinstance(include, list) or not include or \
                any(k not in FAVORITE_KINDS for k in include):
            raise InvalidInput(f"include must name some of {', '.join(FAVORITE_KINDS)}",
                               "include")
        backfill = raw.get("backfill", True)
        if not isinstance(backfill, bool):
            raise InvalidInput("backfill must be true or false", "backfill")
        quality = JobSpec.from_json({"type": "track", "trackId": 1,
                                     "quality": raw.get("quality", default_quality.value)},
                                    default_quality).quality
        import secrets  # only the daemon makes ids

        return cls(id="follow-" + secrets.token_hex(5), kind="favorites", ref="me",
                   quality=quality, include=tuple(dict.fromkeys(include)), backfill=backfill,
                   created_at=now, next_check_at=now, title="TIDAL favourites")
