"""Typed configuration from ROOMWIRE_* variables: defaults, parsing, failing fast."""

from __future__ import annotations

import pytest

from meetingroom_operator.config import Config
from meetingroom_operator.errors import ConfigError
from meetingroom_operator.metrics import Metrics

GOOD = {"ROOMWIRE_REDIS_URL": "redis://127.0.0.1:6379/0", "ROOMWIRE_CONTROL_SECRET": "x" * 16}


def test_defaults_and_parsing() -> None:
    cfg = Config.from_env({**GOOD, "ROOMWIRE_PER_POD": "50", "ROOMWIRE_SCALING_ENABLED": "no",
                           "ROOMWIRE_SKEW_THRESHOLD": "1.2"})  # fmt: skip
    assert cfg.per_pod == 50 and cfg.scaling_enabled is False and cfg.skew_threshold == 1.2
    assert cfg.namespace == "default" and cfg.grace_ttl_s == 30


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "ROOMWIRE_REDIS_URL is required"),
        ({"ROOMWIRE_REDIS_URL": "http://x"}, "redis:// URL"),
        ({"ROOMWIRE_CONTROL_SECRET": "short"}, ">= 16 characters"),
        ({"ROOMWIRE_PER_POD": "lots"}, "ROOMWIRE_PER_POD='lots'"),
        ({"ROOMWIRE_PER_POD": "0"}, "ROOMWIRE_PER_POD must be > 0"),
        ({"ROOMWIRE_MIN_REPLICAS": "5", "ROOMWIRE_MAX_REPLICAS": "2"}, "MIN_REPLICAS"),
        ({"ROOMWIRE_SCALING_ENABLED": "maybe"}, "expected true or false"),
        ({"ROOMWIRE_ACCEPT_LOW": "1.5"}, "ACCEPT_LOW"),
    ],
)
def test_bad_values_fail_fast(env: dict[str, str], message: str) -> None:
    base = {} if env == {} else GOOD
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        Config.from_env({**base, **env})


def test_all_problems_listed_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_env({"ROOMWIRE_PER_POD": "x"})
    text = str(e.value)
    assert "REDIS_URL" in text and "CONTROL_SECRET" in text and "PER_POD" in text


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    import aiohttp

    from meetingroom_operator.metrics import serve
    from tests.support import free_port

    m = Metrics()
    m.skew.set(1.25)
    port = free_port()
    runner = await serve(m, port, "127.0.0.1")
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            assert "roomwire_operator_skew 1.25" in await r.text()
    finally:
        await runner.cleanup()


def test_metrics_render() -> None:
    m = Metrics()
    m.moves.inc(3, "room")
    m.skew.set(1.5)
    m.reconcile.observe(0.02, "loop")
    text = m.render()
    assert 'roomwire_operator_moves_total{kind="room"} 3' in text
    assert "roomwire_operator_skew 1.5" in text
    assert 'roomwire_operator_reconcile_seconds_bucket{kind="loop",le="0.025"} 1' in text
    assert 'roomwire_operator_reconcile_seconds_count{kind="loop"} 1' in text
