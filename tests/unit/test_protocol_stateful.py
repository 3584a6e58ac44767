"""The protocol core under hypothesis' stateful testing: any sequence of frames (valid,
malformed, mutated), decisions of the adapter (join accepted or refused) and clock
steps, checked after every step against what docs/protocol.md promises:

- the core never raises; a closed connection says nothing more; it closes at most once,
  with a documented code, and then only after an error frame that says why;
- every error carries a documented code, and the offending frame's id when it had one;
- nothing is relayed or broadcast before a join was accepted; what is relayed is stamped
  with the joined peer's id and encoded exactly once (the text is the frame);
- one join at a time; the rate limit holds: accepted frames never exceed the burst plus
  the rate times the time elapsed.
"""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from signaling.protocol import (
    Close,
    CloseCode,
    Connection,
    ErrorCode,
    Intent,
    Join,
    Leave,
    Limits,
    Relay,
    Role,
    RoomEvent,
    Send,
)

NAMES = st.text(string.ascii_letters + string.digits + "._:@-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalnum()
)
ANY_NAME = st.one_of(NAMES, st.text(max_size=140), st.integers(), st.none())
IDS = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=140), st.booleans())
JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
TYPES = st.sampled_from(
    ["join", "leave", "ping", "offer", "answer", "candidate", "broadcast", "control", "nope"]
)
CODES = {c.value for c in ErrorCode}
CLOSES = {int(c) for c in CloseCode}
RATE, BURST = 20.0, 30


def frame_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": TYPES},
        optional={
            "room": ANY_NAME,
            "peer": ANY_NAME,
            "role": st.sampled_from(["participant", "screen", "controller", "edge", "x"]),
            "to": ANY_NAME,
            "topic": ANY_NAME,
            "data": JSONISH,
            "id": IDS,
            "last_seq": st.one_of(st.integers(-5, 2**40), st.text(max_size=3)),
            "resume": st.one_of(st.text(max_size=20), st.integers()),
        },
    )


def mutate(text: str, data: st.DataObject) -> str:
    """One of: cut short, a character replaced, doubled, wrapped, or left as it is."""
    how = data.draw(st.sampled_from(["cut", "replace", "double", "wrap", "as-is"]))
    if how == "cut" and text:
        return text[: data.draw(st.integers(0, len(text) - 1))]
    if how == "replace" and text:
        i = data.draw(st.integers(0, len(text) - 1))
        return text[:i] + data.draw(st.characters()) + text[i + 1 :]
    if how == "double":
        return text + text
    if how == "wrap":
        return "[" + text + "]"
    return text


def parsed(text: str) -> dict[str, Any] | None:
    """The frame as the server reads ``text`` (the id an error must echo), if any."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return frame if isinstance(frame, dict) else None


class ProtocolCore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn = Connection(Limits(rate_per_s=RATE, rate_burst=BURST, abuse_errors=50))
        self.now = 1000.0
        self.start = self.now
        self.joined_as: str | None = None
        self.join_pending = False
        self.closed_with: int | None = None
        self.accepted = 0  # frames past the rate limit

    # -- what the adapter and the clock do ------------------------------------------------

    @rule(dt=st.floats(0.0, 2.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.join_pending)
    @rule(accept=st.booleans())
    def adapter_decides(self, accept: bool) -> None:
        join = self.pending
        if accept:
            self.conn.join_accepted(join.room, join.peer, join.role)
            self.joined_as = join.peer
        else:
            self.conn.join_refused()
        self.join_pending = False

    # -- what a client sends ------------------------------------------------------------

    @rule(frame=frame_strategy(), data=st.data())
    def send_frame(self, frame: dict[str, Any], data: st.DataObject) -> None:
        text = json.dumps(frame)
        if data.draw(st.booleans()):
            text = mutate(text, data)
        self.check(self.conn.receive_text(text, self.now), parsed(text))

    @rule(room=NAMES, peer=NAMES, role=st.sampled_from(["participant", "screen", "controller"]))
    def send_join(self, room: str, peer: str, role: str) -> None:
        frame = {"type": "join", "room": room, "peer": peer, "role": role, "id": 7}
        self.check(self.conn.receive_text(json.dumps(frame), self.now), frame)

    @rule(to=NAMES, kind=st.sampled_from(["offer", "answer", "candidate"]), data=JSONISH)
    def send_relay(self, to: str, kind: str, data: Any) -> None:
        frame = {"type": kind, "to": to, "data": {"x": data}, "id": "r"}
        self.check(self.conn.receive_text(json.dumps(frame), self.now), frame)

    @rule(text=st.text(max_size=60))
    def send_garbage(self, text: str) -> None:
        self.check(self.conn.receive_text(text, self.now), parsed(text))

    @rule()
    def send_binary(self) -> None:
        self.check(self.conn.receive_binary(self.now), None)

    # -- checks ---------------------------------------------------------------------------

    def check(self, intents: list[Intent], frame: dict[str, Any] | None) -> None:
        if self.closed_with is not None:
            assert intents == [], "a closed connection said more"
            return
        rate_limited = any(
            isinstance(i, Send) and i.frame.get("code") == ErrorCode.RATE_LIMITED for i in intents
        )
        if not rate_limited:
            self.accepted += 1
        for n, intent in enumerate(intents):
            if isinstance(intent, Send):
                f = intent.frame
                if f["type"] == "error":
                    assert f["code"] in CODES, f
                    if "id" in f:
                        assert frame is not None and f["id"] == frame.get("id"), (f, frame)
            elif isinstance(intent, Close):
                assert intent.code in CLOSES, intent
                assert n == len(intents) - 1, "something after the close"
                assert any(isinstance(i, (Send, Leave)) for i in intents[:n]), "closed silently"
                self.closed_with = intent.code
            elif isinstance(intent, Join):
                assert self.joined_as is None and not self.join_pending, "a second join"
                self.join_pending, self.pending = True, intent
                assert isinstance(intent.role, Role)
            elif isinstance(intent, (Relay, RoomEvent)):
                assert self.joined_as is not None, "relayed before a join was accepted"
                assert intent.frame["from"] == self.joined_as
                assert orjson.loads(intent.text) == intent.frame
            elif isinstance(intent, Leave):
                assert self.joined_as is not None

    @invariant()
    def rate_limit_holds(self) -> None:
        assert self.accepted <= BURST + RATE * (self.now - self.start) + 1

    @invariant()
    def closed_means_closed(self) -> None:
        assert (self.closed_with is not None) == self.conn.closed


ProtocolCore.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same cases in every run: a failure here is a bug, not luck
)
test_protocol_core = ProtocolCore.TestCase
