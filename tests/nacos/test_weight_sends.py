"""The operator's "send on change" decision for the ``weight`` command (pure)."""

from __future__ import annotations

from meetingroom_operator.planning.weight_sends import Sent, WeightSends, due


def test_a_weight_is_sent_first_then_only_when_it_changes_or_is_due_again() -> None:
    assert due({"a": 100, "b": 40}, {}, now=0.0) == {"a": 100, "b": 40}
    sent = {"a": Sent(100, 0.0), "b": Sent(40, 0.0)}
    assert due({"a": 100, "b": 40}, sent, now=5.0) == {}
    assert due({"a": 100, "b": 0}, sent, now=5.0) == {"b": 0}
    assert due({"a": 100, "b": 40}, sent, now=29.9, refresh_s=30) == {}
    assert due({"a": 100, "b": 40}, sent, now=30.0, refresh_s=30) == {"a": 100, "b": 40}


def test_the_memory_records_only_what_reached_a_pod_and_forgets_gone_pods() -> None:
    sends = WeightSends(refresh_s=30)
    assert sends.due({"a": 100, "b": 100}, 0.0) == {"a": 100, "b": 100}
    sends.record("a", 100, 0.0)  # b had no listener yet: not recorded
    assert sends.due({"a": 100, "b": 100}, 1.0) == {"b": 100}
    sends.record("b", 100, 1.0)
    assert sends.due({"a": 100, "b": 100}, 2.0) == {}
    assert sends.due({"a": 65, "b": 100}, 3.0) == {"a": 65}
    sends.keep_only(["b"])
    assert set(sends.sent) == {"b"}
    assert sends.due({"a": 65, "b": 100}, 4.0) == {"a": 65}  # "a" again: a new pod
