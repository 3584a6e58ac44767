"""Live settings from a config-center document (roomwire_contract.live): what is taken,
what is refused, and that a refusal leaves the settings in force untouched."""

from __future__ import annotations

import yaml

from roomwire_contract.live import Applied, LiveSettings, Refused
from roomwire_contract.settings import live_names, setting, settings_class


@settings_class
class Tunables:
    port: int = setting(default=8080, gt=0, help="needs a restart")
    rate: float = setting(default=50.0, gt=0, help="frames per second", live=True)
    max_peers: int = setting(default=64, gt=0, help="peers per room", live=True)
    enabled: bool = setting(default=True, help="on or off", live=True)
    level: str = setting(default="INFO", choices=("INFO", "DEBUG"), help="log", live=True)
    low: float = setting(default=1.0, ge=1.0, help="low", live=True)
    high: float = setting(default=2.0, ge=1.0, help="high", live=True)


def ordered(t: Tunables) -> list[str]:
    return [] if t.low <= t.high else ["need low <= high"]


def live() -> LiveSettings[Tunables]:
    return LiveSettings(Tunables(port=9000), ordered)


def test_live_names_are_the_declared_ones() -> None:
    assert live_names(Tunables) == ("rate", "max_peers", "enabled", "level", "low", "high")


def test_a_document_applies_on_top_of_the_start_up_settings() -> None:
    s = live()
    out = s.offer("rate: 10\nmax-peers: '8'\nenabled: false\nlevel: DEBUG\n", yaml.safe_load)
    assert isinstance(out, Applied)
    assert out.settings == Tunables(port=9000, rate=10.0, max_peers=8, enabled=False, level="DEBUG")
    assert out.changed == ("rate", "max_peers", "enabled", "level")
    assert isinstance(out.settings.rate, float)
    # a name left out goes back to its start-up value; an unchanged one is not "changed"
    again = s.offer("rate: 10\n", yaml.safe_load)
    assert isinstance(again, Applied)
    assert again.settings == Tunables(port=9000, rate=10.0)
    assert again.changed == ("max_peers", "enabled", "level")


def test_an_empty_or_deleted_document_means_the_start_up_settings() -> None:
    s = live()
    assert isinstance(s.offer("rate: 5", yaml.safe_load), Applied)
    for text in ("", "  \n", None, "# nothing\n"):
        assert isinstance(s.offer("rate: 5", yaml.safe_load), Applied)
        out = s.offer(text, yaml.safe_load)
        assert isinstance(out, Applied) and out.settings == Tunables(port=9000), text


def test_every_problem_is_listed_and_the_settings_in_force_stay() -> None:
    s = live()
    assert isinstance(s.offer("rate: 20", yaml.safe_load), Applied)
    kept = s.current
    out = s.offer(
        "rate: -1\nmax_peers: many\nport: 1\nnope: 3\nenabled: 2\nlevel: TRACE\n", yaml.safe_load
    )
    assert isinstance(out, Refused)
    text = "\n".join(out.problems)
    for needle in (
        "rate must be > 0",
        "max_peers='many' is not a valid int",
        "port: needs a restart",
        "nope: no such setting",
        "enabled=2 is not a valid bool",
        "level must be one of INFO, DEBUG",
    ):
        assert needle in text, (needle, out.problems)
    assert s.current is kept


def test_checks_across_settings_refuse_the_whole_document() -> None:
    s = live()
    out = s.offer("low: 3\nhigh: 2\n", yaml.safe_load)
    assert out == Refused(("need low <= high",))
    assert s.current == Tunables(port=9000)


def test_not_yaml_or_not_a_mapping_is_refused() -> None:
    s = live()
    bad = s.offer("rate: [1,\n", yaml.safe_load)
    assert isinstance(bad, Refused) and bad.problems[0].startswith("not valid YAML")
    listed = s.offer("- rate\n- 5\n", yaml.safe_load)
    assert listed == Refused(("the document must be a mapping of setting names to values",))
    assert s.current == Tunables(port=9000)


def test_a_bool_is_never_a_number() -> None:
    out = live().offer("max_peers: true\n", yaml.safe_load)
    assert isinstance(out, Refused) and "max_peers=True is not a valid int" in out.problems[0]
