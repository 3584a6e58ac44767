"""The in-memory registry's three roles (the embedded default), without sockets.

What one process must keep: membership with the room bound, replay offsets, frames kept
for a session in its grace period (bounded, the overflow counted), and nothing left
behind when a session is replaced or leaves.
"""

from __future__ import annotations

import pytest

from signaling.protocol import Role
from signaling.registry import RelayResult, RoomFull, memory_registry


async def test_join_lists_the_others_and_bounds_the_room() -> None:
    reg = memory_registry("solo")
    out = await reg.sessions.join("s1", "r", "alice", Role.PARTICIPANT, 2)
    assert out.peers == [] and out.replaced_sid is None
    out = await reg.sessions.join("s2", "r", "bob", Role.SCREEN, 2)
    assert [(p.peer, p.role) for p in out.peers] == [("alice", "participant")]
    with pytest.raises(RoomFull):
        await reg.sessions.join("s3", "r", "carol", Role.PARTICIPANT, 2)
    # the same peer joining again replaces its session, even in a full room
    again = await reg.sessions.join("s4", "r", "alice", Role.PARTICIPANT, 2)
    assert again.replaced_sid == "s1" and again.replaced_pod == "solo"


async def test_frames_kept_in_grace_are_bounded_and_handed_over_once() -> None:
    reg = memory_registry("solo", keep_max=3)
    await reg.sessions.join("s1", "r", "alice", Role.PARTICIPANT, 10)
    await reg.sessions.detach("s1", "r", "alice", 7, [(7, "seven")])
    for i in range(5):
        assert await reg.routing.keep("s1", "r", "alice", f"f{i}") is False
    out = await reg.sessions.resume("s1", "r", "alice", Role.PARTICIPANT)
    assert out is not None
    assert [t for _, t in out.kept] == ["f2", "f3", "f4"] and out.dropped == 2
    assert out.seq == 7 and out.recent == [(7, "seven")]
    again = await reg.sessions.resume("s1", "r", "alice", Role.PARTICIPANT)
    assert again is not None and again.kept == [] and again.dropped == 0


async def test_a_replaced_session_leaves_nothing_kept_behind() -> None:
    reg = memory_registry("solo")
    await reg.sessions.join("old", "r", "alice", Role.PARTICIPANT, 10)
    await reg.routing.keep("old", "r", "alice", "for the old session")
    await reg.sessions.join("new", "r", "alice", Role.PARTICIPANT, 10)
    assert await reg.sessions.resume("old", "r", "alice", Role.PARTICIPANT) is None
    assert await reg.sessions.take_kept("old", "r", "alice", 0) == []


async def test_replay_offsets_count_up_and_remove_ends_the_room() -> None:
    reg = memory_registry("solo")
    await reg.sessions.join("s1", "r", "alice", Role.PARTICIPANT, 10)
    one = await reg.routing.fan_out("r", '{"type":"broadcast"}', screens_only=False,
                                    exclude_sid="s1", replay=True)  # fmt: skip
    two = await reg.routing.fan_out("r", '{"type":"broadcast"}', screens_only=False,
                                    exclude_sid="s1", replay=True)  # fmt: skip
    assert '"offset":1' in one and '"offset":2' in two
    assert (
        await reg.routing.fan_out("r", "x", screens_only=False, exclude_sid="", replay=False) == "x"
    )
    assert await reg.sessions.remove("s1", "r", "alice") is True
    assert await reg.sessions.remove("s1", "r", "alice") is False  # told once
    assert await reg.sessions.members("r") == []


def test_relays_never_cross_processes_in_memory() -> None:
    reg = memory_registry("solo")
    got: list[RelayResult] = []
    reg.routing.relay("r", "nobody", "x", got.append)
    assert got == [RelayResult.NO_PEER]
