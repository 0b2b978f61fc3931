"""Settings precedence (defaults < file < env < flags) and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidalq.config import load_settings, parse_duration
from tidalq.errors import ConfigError
from tidalq.terms import Quality


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_seed(tmp_path: Path) -> None:
    s = load_settings(config_path=None, env={"HOME": str(tmp_path)})
    assert (s.max_concurrent, s.poll_interval, s.retention) == (4, 2.0, 86400.0)
    assert s.quality is Quality.LOSSLESS and s.conflict == "overwrite_if_different"
    assert s.store.startswith("sqlite:///") and s.store.endswith("/tidalq/queue.db")
    assert s.download_dir.name == "TIDAL" and s.workers is True


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'max_concurrent = 2\nquality = "HIGH"\nretention = "2h"\n'
                          'api_urls = ["http://a/", "http://b"]\n')
    s = load_settings(config_path=cfg, env={"TIDALQ_MAX_CONCURRENT": "6"})
    assert s.max_concurrent == 6 and s.quality is Quality.HIGH and s.retention == 7200
    assert s.api_urls == ("http://a", "http://b")
    s = load_settings({"max_concurrent": 8}, config_path=cfg,
                      env={"TIDALQ_MAX_CONCURRENT": "6", "TIDALQ_API_URLS": "http://c"})
    assert s.max_concurrent == 8 and s.api_urls == ("http://c",)


def test_redis_url_and_redis_disabled(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://:secret@127.0.0.1:6379/0", "STATE_DIRECTORY": str(tmp_path)}
    s = load_settings(env=env)
    assert s.store == env["REDIS_URL"] and "secret" not in repr(s)
    assert load_settings(env={**env, "REDIS_DISABLED": "true"}).store == \
        f"sqlite:///{tmp_path}/queue.db"
    assert load_settings(env={**env, "TIDALQ_STORE": "memory:"}).store == "memory:"


def test_unknown_key_and_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_concurent"):
        load_settings(config_path=write(tmp_path, "max_concurent = 3\n"), env={})
    with pytest.raises(ConfigError, match="quality"):
        load_settings(config_path=write(tmp_path, 'quality = "ULTRA"\n'), env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_path=write(tmp_path, "max_concurrent = \n"), env={})
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('download_dir = "/music/Björk"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_path=latin1, env={})
    with pytest.raises(ConfigError, match="max_concurrent"):
        load_settings(env={"TIDALQ_MAX_CONCURRENT": "zero"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="http_listen"):
        load_settings(env={"TIDALQ_HTTP": "nonsense"})


def test_http_token_is_hidden_from_repr() -> None:
    s = load_settings(env={"TIDALQ_HTTP_TOKEN": "hunter2"})
    assert s.http_token == "hunter2" and "hunter2" not in repr(s)
    s = load_settings(env={"TIDALQ_TIDAL_CLIENT_SECRET": "c2VjcmV0"})
    assert s.tidal_client_secret == "c2VjcmV0" and "c2VjcmV0" not in repr(s)


@pytest.mark.parametrize(("raw", "names"), [("tidal", ("tidal",)),
                                            ("tidal,hifi", ("tidal", "hifi")),
                                            (["hifi", "tidal"], ("hifi", "tidal"))])
def test_upstream_names_the_catalogues_in_order(raw: object, names: tuple[str, ...]) -> None:
    assert load_settings({"upstream": raw}, env={}).upstream == names


@pytest.mark.parametrize("raw", ["spotify", "tidal,tidal", [], ["tidal", 3]])
def test_a_bad_upstream_names_the_key(raw: object) -> None:
    with pytest.raises(ConfigError, match="upstream must be hifi, tidal"):
        load_settings({"upstream": raw}, env={})


@pytest.mark.parametrize(("raw", "seconds"), [(30, 30), ("90s", 90), ("15m", 900),
                                              ("24h", 86400), ("1.5d", 129600), ("250ms", 0.25)])
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw, "x") == seconds


@pytest.mark.parametrize("raw", ["", "-1", "0", "soon", True, "5 parsecs"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(raw, "x")
