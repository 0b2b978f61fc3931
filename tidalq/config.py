"""Settings: built-in defaults < config file (TOML) < environment < command-line flags.

Precedence is enforced here and nowhere else: :func:`load_settings` takes the flags the
CLI collected and returns one frozen :class:`Settings`. Unknown keys and bad values raise
:class:`~tidalq.errors.ConfigError` naming the key and where it came from. Imports only the
standard library and platformdirs, so the CLI stays fast.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from tidalq.errors import ConfigError
from tidalq.terms import Quality

APP = "tidalq"
DEFAULT_PATH_TEMPLATE = "{albumartist}/{album}/{disc_track} - {title}"
CONFLICT_MODES = ("overwrite_if_different", "overwrite", "skip")
UPSTREAMS = ("hifi", "tidal")
DEFAULT_TIDAL_CLIENT_ID = "fX2JxdmntZWK0ixT"
DEFAULT_TIDAL_CLIENT_SECRET = "1Nn9AfDAjxrgJFJbKNWLeAyKGVGmINuXPPLHVXAvxAg="

# config key -> environment variable (REDIS_URL / REDIS_DISABLED are handled in _store_url)
ENV_KEYS: dict[str, str] = {
    "download_dir": "TIDAL_DOWNLOADS",
    "store": "TIDALQ_STORE",
    "socket": "TIDALQ_SOCKET",
    "socket_group": "TIDALQ_SOCKET_GROUP",
    "api_urls": "TIDALQ_API_URLS",
    "cover_url": "TIDALQ_COVER_URL",
    "quality": "TIDALQ_QUALITY",
    "max_concurrent": "TIDALQ_MAX_CONCURRENT",
    "poll_interval": "TIDALQ_POLL_INTERVAL",
    "max_attempts": "TIDALQ_MAX_ATTEMPTS",
    "retention": "TIDALQ_RETENTION",
    "conflict": "TIDALQ_CONFLICT",
    "path_template": "TIDALQ_PATH_TEMPLATE",
    "http_listen": "TIDALQ_HTTP",
    "http_token": "TIDALQ_HTTP_TOKEN",
    "http_cors_origins": "TIDALQ_HTTP_CORS_ORIGINS",
    "workers": "TIDALQ_WORKERS",
    "lease": "TIDALQ_LEASE",
    "drain_timeout": "TIDALQ_DRAIN_TIMEOUT",
    "retry_after_max": "TIDALQ_RETRY_AFTER_MAX",
    "max_stalls": "TIDALQ_MAX_STALLS",
    "playlist_dir": "TIDALQ_PLAYLIST_DIR",
    "follow_interval": "TIDALQ_FOLLOW_INTERVAL",
    "webhook_url": "TIDALQ_WEBHOOK_URL",
    "notify_urls": "TIDALQ_NOTIFY_URLS",
    "musicbrainz": "TIDALQ_MUSICBRAINZ",
    "musicbrainz_url": "TIDALQ_MUSICBRAINZ_URL",
    "musicbrainz_contact": "TIDALQ_MUSICBRAINZ_CONTACT",
    "http_allowed_hosts": "TIDALQ_HTTP_ALLOWED_HOSTS",
    "upstream": "TIDALQ_UPSTREAM",
    "tidal_client_id": "TIDALQ_TIDAL_CLIENT_ID",
    "tidal_client_secret": "TIDALQ_TIDAL_CLIENT_SECRET",
    "tidal_api_url": "TIDALQ_TIDAL_API_URL",
    "tidal_auth_url": "TIDALQ_TIDAL_AUTH_URL",
    "request_pace": "TIDALQ_REQUEST_PACE",
    "lyrics": "TIDALQ_LYRICS",
    "state_dir": "TIDALQ_STATE_DIR",
}


@dataclass(frozen=True)
class Settings:
    """Everything the daemon and the CLI read from configuration. ``repr`` hides secrets."""

    download_dir: Path
    store: str
    socket: Path
    socket_group: str | None = None
    api_urls: tuple[str, ...] = ()
    cover_url: str = "https://resources.tidal.com"
    quality: Quality = Quality.LOSSLESS
    max_concurrent: int = 4
    poll_interval: float = 2.0
    max_attempts: int = 3
    retention: float = 24 * 3600.0
    conflict: str = "overwrite_if_different"
    path_template: str = DEFAULT_PATH_TEMPLATE
    http_listen: str | None = None
    http_token: str | None = field(default=None, repr=False)
    http_cors_origins: tuple[str, ...] = ()
    workers: bool = True
    lease: float = 30.0
    drain_timeout: float = 20.0
    retry_after_max: float = 6 * 3600.0
    max_stalls: int = 5
    playlist_dir: str = "Playlists"  # under download_dir: where .m3u8 files go
    follow_interval: float = 6 * 3600.0
    on_complete: tuple[str, ...] = ()
    on_fail: tuple[str, ...] = ()
    hook_timeout: float = 60.0
    webhook_url: str | None = None
    notify_urls: tuple[str, ...] = field(default=(), repr=False)  # may hold credentials
    musicbrainz: str = "off"  # "auto": every job finds its release (as the web app asks)
    musicbrainz_url: str = "https://musicbrainz.org"
    musicbrainz_contact: str = "tidalq user"  # MusicBrainz asks for a way to reach you
    http_allowed_hosts: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ("hifi",)  # catalogues in the order they are tried
    # the client a TIDAL login belongs to: python-tidal's device client (tidalapi/config.py);
    # TIDAL rotates clients and the quality offered depends on the client (account.md)
    tidal_client_id: str = DEFAULT_TIDAL_CLIENT_ID
    tidal_client_secret: str = field(default=DEFAULT_TIDAL_CLIENT_SECRET, repr=False)
    tidal_api_url: str = "https://api.tidal.com/v1"
    tidal_auth_url: str = "https://auth.tidal.com/v1/oauth2"
    request_pace: int = 60  # TIDAL API requests a minute, at most (streamrip's default)
    state_dir: Path | None = None  # where the TIDAL login is kept; None: the user state dir
    # off by default: lyrics are one more upstream request per track (what rate limits
    # and account bans count), doubling what an album costs for a tag few players show
    lyrics: bool = False
    config_file: Path | None = None

    @property
    def login_file(self) -> Path:
        """Where the TIDAL login is kept (0600): the daemon's state folder."""
        state = self.state_dir or Path(platformdirs.user_state_dir(APP))
        return state / "tidal-login.json"

    @property
    def staging_dir(self) -> Path:
        return self.download_dir / ".tidalq" / "staging"

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        shown["store"] = redact_url(self.store)
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def redact_url(url: str) -> str:
    """Hide the password of ``redis://user:password@host`` URLs."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


# -- value parsers: (raw value, key) -> typed value -------------------------------------------

def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string", key)
    return value


def _path(value: Any, key: str) -> Path:
    return Path(os.path.expanduser(_text(value, key)))


_WHOLE = re.compile(r"^\s*[0-9]{1,9}\s*$")  # ASCII digits only: "²" and "٣" are not numbers here


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, str) and _WHOLE.match(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ConfigError(f"{key} must be a whole number from 1 to 1000", key)
    return value


_DURATION = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# (lowest, highest) seconds each duration key may take
DURATION_RANGES: dict[str, tuple[float, float]] = {
    "poll_interval": (0.01, 3600.0),
    "retention": (1.0, 3650 * 86400.0),
    "lease": (1.0, 3600.0),
    "drain_timeout": (0.0, 3600.0),
    "retry_after_max": (1.0, 7 * 86400.0),
    "follow_interval": (1.0, 30 * 86400.0),
    "hook_timeout": (1.0, 3600.0),
}


def parse_duration(value: Any, key: str) -> float:
    """``30``, ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"`` -> seconds, finite and in the
    key's range."""
    low, high = DURATION_RANGES.get(key, (0.001, 3650 * 86400.0))
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNIT_S[match[2]]
    if seconds is None or not math.isfinite(seconds) or not low <= seconds <= high \
            or seconds <= 0 < low:
        raise ConfigError(f"{key} must be a duration from {_span(low)} to {_span(high)}, "
                          "such as 30s, 15m, 24h", key)
    return seconds


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}", key)
    return str(value)


def _argv(value: Any, key: str) -> tuple[str, ...]:
    """A command as a list of strings (no shell): ["/usr/local/bin/hook", "--flag"]."""
    if not isinstance(value, list | tuple) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a command as a list of strings, "
                          'e.g. ["/usr/local/bin/on-done", "--quiet"]', key)
    return tuple(value)


def _notify_urls(value: Any, key: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{key} must be a list of notification URLs", key)
    return tuple(v.strip() for v in items if v.strip())


def _relative_dir(value: Any, key: str) -> str:
    text = _text(value, key).strip("/")
    if not text or ".." in Path(text).parts:
        raise ConfigError(f"{key} must be a folder inside download_dir", key)
    return text


def _hosts(value: Any, key: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(h, str) for h in items):
        raise ConfigError(f"{key} must be a list of host names (HOST or HOST:PORT)", key)
    return tuple(h.strip().lower() for h in items if h.strip())


def _urls(value: Any, key: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key} must be a list of URLs", key)
    urls = tuple(str(u).strip().rstrip("/") for u in items if str(u).strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}: {url!r} is not an http(s) URL", key)
    return urls


def _url(value: Any, key: str) -> str:
    return _urls(_text(value, key), key)[0]


def _quality(value: Any, key: str) -> Quality:
    try:
        return Quality(str(value).upper())
    except ValueError:
        raise ConfigError(f"{key} must be one of LOW, HIGH, LOSSLESS, HI_RES_LOSSLESS",
                          key) from None


def _conflict(value: Any, key: str) -> str:
    if value not in CONFLICT_MODES:
        raise ConfigError(f"{key} must be one of {', '.join(CONFLICT_MODES)}", key)
    return str(value)


def _switch(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"{key} must be on or off", key)


def _listen(value: Any, key: str) -> str:
    text = _text(value, key)
    host, sep, port = text.rpartition(":")
    if not sep or not _WHOLE.match(port) or not 0 <= int(port) < 65536 or not host:
        raise ConfigError(f"{key} must be HOST:PORT, for example 127.0.0.1:5173", key)
    return text


def _upstreams(value: Any, key: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key} must be hifi, tidal, or a list of them in order", key)
    names = tuple(str(i).strip().lower() for i in items if str(i).strip())
    if not names or any(n not in UPSTREAMS for n in names) or len(set(names)) < len(names):
        raise ConfigError(f"{key} must be hifi, tidal, or a list of them in order "
                          "(each once), for example [\"tidal\", \"hifi\"]", key)
    return names


def _template(value: Any, key: str) -> str:
    text = _text(value, key)
    if "{title}" not in text:
        raise ConfigError(f"{key} must contain {{title}}", key)
    return text


PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "download_dir": _path, "store": _text, "socket": _path, "socket_group": _text,
    "api_urls": _urls, "cover_url": _url, "quality": _quality,
    "max_concurrent": _positive_int, "poll_interval": parse_duration,
    "max_attempts": _positive_int, "retention": parse_duration, "conflict": _conflict,
    "path_template": _template, "http_listen": _listen, "http_token": _text,
    "http_cors_origins": _urls,
    "workers": _switch, "lease": parse_duration, "drain_timeout": parse_duration,
    "retry_after_max": parse_duration, "http_allowed_hosts": _hosts,
    "max_stalls": _positive_int, "playlist_dir": _relative_dir,
    "follow_interval": parse_duration, "hook_timeout": parse_duration,
    "on_complete": _argv, "on_fail": _argv,
    "webhook_url": _url, "notify_urls": _notify_urls,
    "musicbrainz": lambda v, k: _choice(v, k, ("off", "auto")), "musicbrainz_url": _url,
    "musicbrainz_contact": _text,
    "upstream": lambda v, k: _upstreams(v, k), "tidal_client_id": _text,
    "tidal_client_secret": _text, "tidal_api_url": _url, "tidal_auth_url": _url,
    "request_pace": _positive_int, "state_dir": _path, "lyrics": _switch,
}


# -- sources --------------------------------------------------------------------------------

def default_config_path(env: Mapping[str, str]) -> Path:
    """systemd's ConfigurationDirectory= (``/etc/tidalq``) when set, else the user's."""
    if env.get("CONFIGURATION_DIRECTORY"):
        return Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / "config.toml"
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def read_config_file(path: Path, required: bool) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist", "config") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", "config") from exc
    import tomllib  # only when there is a file to read: every command starts faster without

    try:
        data = tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "config") from exc
    for key in data:
        if key not in PARSERS:
            raise ConfigError(f"unknown key {key!r} in {path}", key)
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {key: env[var] for key, var in ENV_KEYS.items() if env.get(var, "") != ""}


def _store_url(explicit: str | None, env: Mapping[str, str], state_dir: Path) -> str:
    """``store`` wins; else REDIS_URL unless REDIS_DISABLED; else the SQLite file."""
    if explicit:
        return explicit
    redis_off = env.get("REDIS_DISABLED", "false").lower() in ("1", "true", "yes", "on")
    if env.get("REDIS_URL") and not redis_off:
        return env["REDIS_URL"]
    return f"sqlite:///{state_dir / 'queue.db'}"


def _defaults(env: Mapping[str, str]) -> tuple[Path, Path, Path]:
    """(download dir, state dir, socket path), honouring systemd's directories."""
    music = Path(platformdirs.user_music_dir()) / "TIDAL"
    state = Path(env["STATE_DIRECTORY"].split(":")[0]) if env.get("STATE_DIRECTORY") \
        else Path(platformdirs.user_state_dir(APP))
    return music, state, default_socket(env)


def default_socket(env: Mapping[str, str]) -> Path:
    """Where the socket is when nobody said: the CLI trusts only its own (or root's) there."""
    if env.get("RUNTIME_DIRECTORY"):
        runtime = Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    elif env.get("XDG_RUNTIME_DIR"):
        runtime = Path(env["XDG_RUNTIME_DIR"]) / APP
    else:
        runtime = Path(f"/tmp/{APP}-{os.getuid()}")
    return runtime / "tidalq.sock"


def load_settings(flags: Mapping[str, Any] | None = None, config_path: Path | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings: defaults < file < environment < flags (None flags are ignored)."""
    env = os.environ if env is None else env
    explicit = config_path or (Path(env["TIDALQ_CONFIG"]) if env.get("TIDALQ_CONFIG") else None)
    path = explicit or default_config_path(env)
    merged: dict[str, Any] = {}
    for source in (read_config_file(path, required=explicit is not None), _from_env(env),
                   {k: v for k, v in (flags or {}).items() if v is not None}):
        merged.update(source)
    values = {key: PARSERS[key](raw, key) for key, raw in merged.items()}
    music, state, sock = _defaults(env)
    values.setdefault("download_dir", music)
    values.setdefault("socket", sock)
    values.setdefault("state_dir", state)
    values["store"] = _store_url(values.get("store"), env, state)
    values["config_file"] = path if path.exists() else None
    return Settings(**values)


def config_keys() -> list[str]:
    """Every key a config file may hold (the man page test checks they are documented)."""
    return [f.name for f in fields(Settings) if f.name in PARSERS]
