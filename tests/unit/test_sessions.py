"""The hub's session index and session bookkeeping (``signaling.hub.sessions``), on
their own: plain objects, no sockets, no registry, no event loop."""

from __future__ import annotations

import time

from signaling.hub.sessions import LocalSession, SessionIndex, busy_change
from signaling.protocol import Role


def session(sid: str, room: str = "r", peer: str = "p") -> LocalSession:
    return LocalSession(sid, room, peer, Role.PARTICIPANT, f"token-{sid}")


def test_add_and_remove_keep_the_three_maps_in_step() -> None:
    index = SessionIndex()
    a, b = session("a", peer="alice"), session("b", peer="bob")
    index.add(a)
    index.add(b)
    assert index.sessions == {"a": a, "b": b}
    assert index.by_peer == {("r", "alice"): a, ("r", "bob"): b}
    assert index.rooms == {"r": {"a", "b"}}
    assert sorted(s.sid for s in index.room_members("r")) == ["a", "b"]
    index.remove(a)
    index.remove(b)
    assert index.sessions == {} and index.by_peer == {} and index.rooms == {}
    assert index.room_members("r") == []


def test_removing_a_replaced_session_leaves_the_peers_new_one_findable() -> None:
    index = SessionIndex()
    old, new = session("old", peer="alice"), session("new", peer="alice")
    index.add(old)
    index.add(new)  # the same peer joined again
    index.remove(old)
    assert index.by_peer[("r", "alice")] is new
    assert index.rooms == {"r": {"new"}}


def test_removing_twice_is_harmless() -> None:
    index = SessionIndex()
    s = session("a")
    index.add(s)
    index.remove(s)
    index.remove(s)
    assert index.sessions == {}


def test_attached_means_a_connection_or_a_resume_onto_one() -> None:
    index = SessionIndex()
    s = session("a")
    index.add(s)
    assert index.attached("a") is None  # detached: frames for it are kept elsewhere
    s.resuming = []
    assert index.attached("a") is s
    assert not s.live  # but not live while frames are held for the resume
    assert index.attached("nobody") is None


def test_offer_marks_a_negotiation_and_answer_ends_it() -> None:
    s = session("a")
    assert not s.negotiating
    s.note_signal('{"type":"offer","from":"x","data":{}}')
    assert s.negotiating
    s.note_signal('{"type":"candidate","from":"x","data":{}}')
    assert s.negotiating
    s.note_signal('{"type":"answer","from":"x","data":{}}')
    assert not s.negotiating


def test_busy_change_is_published_once_per_change() -> None:
    s = session("a")
    assert busy_change(s) is None  # never busy: nothing to say
    s.note_signal('{"type":"offer"}')
    until = busy_change(s)
    assert until is not None and until > time.time()
    assert busy_change(s) is None  # said already
    s.note_signal('{"type":"answer"}')
    assert busy_change(s) == 0.0  # no longer busy
    assert busy_change(s) is None
