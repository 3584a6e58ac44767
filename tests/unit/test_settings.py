"""The settings declaration shared by workload and operator (``roomwire_contract.settings``):
flags and variables derived from one field, precedence, parsing, bounds and the listing of
every problem at once. Pure: mappings and an argparse parser, no process, no environment."""

from __future__ import annotations

import argparse

import pytest

from roomwire_contract.settings import SettingsError, add_flags, load, setting, settings_class


@settings_class
class Example:
    url: str = setting(help="where to connect; required")
    grace_s: float = setting(default=30.0, gt=0, help="seconds a session waits")
    port: int = setting(default=8080, gt=0, lt=65536, help="port")
    retries: int = setting(default=0, ge=0, help="retries")
    enabled: bool = setting(default=True, help="on or off")
    token: str | None = setting(default=None, help="a secret; absent: none")
    loop: str = setting(default="uvloop", choices=("uvloop", "asyncio"), help="event loop")
    name: str = setting(default_factory=lambda: "computed", help="a name (default: computed)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="example")
    add_flags(p, Example, prefix="EX_")
    return p


def test_defaults_and_variables() -> None:
    s = load(
        Example, {"EX_URL": "redis://x", "EX_PORT": " 9000 ", "EX_ENABLED": "off"}, prefix="EX_"
    )
    assert s == Example(url="redis://x", port=9000, enabled=False)
    assert (s.grace_s, s.token, s.name) == (30.0, None, "computed")


def test_flag_wins_over_variable_and_variable_over_default() -> None:
    args = parser().parse_args(["--grace", "5", "--url", "a"])
    s = load(
        Example, {"EX_GRACE_S": "7", "EX_URL": "b", "EX_RETRIES": "3"}, prefix="EX_", flags=args
    )
    assert (s.grace_s, s.url, s.retries) == (5.0, "a", 3)


def test_empty_means_unset_and_none_for_optionals() -> None:
    s = load(Example, {"EX_URL": "u", "EX_PORT": "", "EX_TOKEN": ""}, prefix="EX_")
    assert s.port == 8080 and s.token is None
    s = load(
        Example,
        {"EX_TOKEN": "t"},
        prefix="EX_",
        flags=parser().parse_args(["--url", "u", "--token", ""]),
    )
    assert s.token is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "EX_URL is required"),
        ({"EX_PORT": "eighty"}, "EX_PORT='eighty' is not a valid int"),
        ({"EX_GRACE_S": "soon"}, "EX_GRACE_S='soon' is not a valid float"),
        (
            {"EX_ENABLED": "maybe"},
            "EX_ENABLED='maybe' is not a valid bool (expected true or false)",
        ),
        ({"EX_GRACE_S": "0"}, "EX_GRACE_S must be > 0 (got 0.0)"),
        ({"EX_PORT": "65536"}, "EX_PORT must be < 65536 (got 65536)"),
        ({"EX_RETRIES": "-1"}, "EX_RETRIES must be >= 0 (got -1)"),
        ({"EX_LOOP": "trio"}, "EX_LOOP must be one of uvloop, asyncio (got 'trio')"),
    ],
)
def test_each_problem_says_which_variable_and_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as e:
        load(Example, {"EX_URL": "u", **env} if env else env, prefix="EX_")
    assert e.value.problems == [message]


def test_a_bad_flag_is_named_by_its_flag() -> None:
    with pytest.raises(SettingsError, match=r"^--grace must be > 0 \(got -1.0\)$"):
        load(Example, {"EX_URL": "u"}, prefix="EX_", flags=parser().parse_args(["--grace=-1"]))


def test_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as e:
        load(Example, {"EX_PORT": "x", "EX_RETRIES": "-2"}, prefix="EX_")
    assert [p.split()[0] for p in e.value.problems] == ["EX_URL", "EX_PORT='x'", "EX_RETRIES"]


def test_help_names_each_flag_variable_and_default() -> None:
    text = " ".join(parser().format_help().split())
    for part in [
        "--grace GRACE seconds a session waits [env EX_GRACE_S; default 30.0]",
        "--port PORT port [env EX_PORT; default 8080]",
        "--token TOKEN a secret; absent: none [env EX_TOKEN]",
        "--name NAME a name (default: computed) [env EX_NAME]",
        "--url URL where to connect; required [env EX_URL]",
    ]:
        assert part in text, part


def test_declarations_are_frozen_and_keyword_only() -> None:
    s = Example(url="u")
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Example("u")  # type: ignore[call-arg]


def test_a_field_without_setting_is_refused() -> None:
    @settings_class
    class Bare:
        x: int = 1

    with pytest.raises(TypeError, match=r"Bare\.x is not declared with setting\(\)"):
        load(Bare, {}, prefix="B_")
