"""The weighted choice of a signaling pod (``roomwire_contract.discovery``), pure: no Nacos,
a seeded ``random.Random``. Statistical checks draw 20,000 times with a fixed seed and
allow each share 1.5 percentage points off its expected value (about 5 standard
deviations of a binomial share at n = 20,000), so they are deterministic, not flaky."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from roomwire_contract.discovery import (
    META_DRAINING,
    WEIGHT_FULL,
    WEIGHT_MIN,
    Endpoint,
    eligible,
    pick,
    registry_weight,
)

DRAWS = 20_000
TOLERANCE = 0.015


def ep(host: str, weight: float, **kw: object) -> Endpoint:
    return Endpoint(host=host, port=8080, weight=weight, **kw)  # type: ignore[arg-type]


def shares(endpoints: list[Endpoint], seed: int = 11) -> dict[str, float]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(DRAWS):
        chosen = pick(endpoints, rng)
        assert chosen is not None
        counts[chosen.host] += 1
    return {h: n / DRAWS for h, n in counts.items()}


def test_choices_follow_the_weights() -> None:
    pods = [ep("10.0.0.1", 100), ep("10.0.0.2", 50), ep("10.0.0.3", 25), ep("10.0.0.4", 5)]
    got = shares(pods)
    total = sum(p.weight for p in pods)
    for p in pods:
        assert got[p.host] == pytest.approx(p.weight / total, abs=TOLERANCE), (p.host, got)


def test_weight_zero_unhealthy_disabled_and_draining_are_never_chosen() -> None:
    pods = [
        ep("10.0.0.1", 100),
        ep("10.0.0.2", 0),
        ep("10.0.0.3", 100, healthy=False),
        ep("10.0.0.4", 100, enabled=False),
        ep("10.0.0.5", 100, metadata={META_DRAINING: "true"}),
        ep("10.0.0.6", 50),
    ]
    got = shares(pods)
    assert set(got) == {"10.0.0.1", "10.0.0.6"}
    assert got["10.0.0.1"] == pytest.approx(2 / 3, abs=TOLERANCE)


def test_nothing_eligible_is_none() -> None:
    rng = random.Random(1)
    assert pick([], rng) is None
    assert pick([ep("10.0.0.1", 0), ep("10.0.0.2", 9, healthy=False)], rng) is None


def test_the_same_seed_gives_the_same_choices_whatever_the_order() -> None:
    pods = [ep("10.0.0.1", 100), ep("10.0.0.2", 30), ep("10.0.0.3", 70)]
    a = [pick(pods, r) for r in [random.Random(5)] for _ in range(50)]
    b = [pick(pods[::-1], r) for r in [random.Random(5)] for _ in range(50)]
    assert a == b
    assert [e.host for e in eligible(pods[::-1])] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


@pytest.mark.parametrize(
    ("weight", "published"),
    [
        (0, 0.0),
        (-3, 0.0),
        (math.nan, 0.0),
        (0.4, WEIGHT_MIN),
        (1, WEIGHT_MIN),
        (1.0, WEIGHT_MIN),
        (2, 2.0),
        (55, 55.0),
        (100, WEIGHT_FULL),
        (250, WEIGHT_FULL),
    ],
)
def test_registry_weight_is_never_exactly_one(weight: float, published: float) -> None:
    assert registry_weight(weight) == published
    assert registry_weight(weight) != 1.0


def test_ws_url() -> None:
    assert ep("10.1.2.3", 1).ws_url == "ws://10.1.2.3:8080/ws"
    assert ep("fd00::5", 1).ws_url == "ws://[fd00::5]:8080/ws"
