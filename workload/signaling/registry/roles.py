"""The registry's three roles, as the hub uses them: sessions, routing, pod presence.

Each has an in-memory implementation (``memory``: one process, the embedded default)
and a Redis one (``redis_*``: shared by every pod). A session is one peer's presence in
one room; operations on it name the room, the peer and the session id, so that a
backend can find its keys without a look-up (and check that the session was not
replaced meanwhile).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass

from roomwire_contract.edges import EdgeRecord

from ..protocol import Role
from .model import (
    InboxHandler,
    JoinOutcome,
    PeerInfo,
    PodStats,
    RelayDone,
    ResumeOutcome,
    RoomBudget,
    SessionRecord,
)


class Sessions(ABC):
    """Who is in which room, and what a session that dropped left behind."""

    # How long an empty room's history and metadata stay (``idle_s``); replaced whole
    # when the settings change.
    budget: RoomBudget = RoomBudget()

    @abstractmethod
    async def join(self, sid: str, room: str, peer: str, role: Role, max_peers: int) -> JoinOutcome:
        """Register a new session as a member of the room (replacing the peer's previous
        session, if any); raises RoomFull."""

    @abstractmethod
    async def members(self, room: str) -> list[PeerInfo]: ...

    @abstractmethod
    async def resume(
        self,
        sid: str,
        room: str,
        peer: str,
        role: Role,
        last_rn: int | None = None,
        attempt: str = "",
    ) -> ResumeOutcome | None:
        """Attach the session to this pod and hand over what was kept; None if it is gone.

        ``last_rn`` is the highest route number the client received: frames routed to
        the session's old pod after it are handed over too (the pod may have died with
        them in flight). ``attempt`` names this resume: until ``resumed`` says it is
        over, another resume of the session (on any pod) raises ``ResumeBusy``.
        """

    async def resumed(self, room: str, peer: str, attempt: str) -> None:
        """The resume ``attempt`` is over: the session may be taken over again."""
        return None

    @abstractmethod
    async def detach(
        self, sid: str, room: str, peer: str, seq: int, recent: list[tuple[int, str]]
    ) -> None:
        """The session's connection is gone: keep the session for the grace period.

        ``recent`` are the last frames sent on the lost connection; the client may not
        have received them, so a resume re-sends those past the client's ``last_seq``.
        """

    @abstractmethod
    async def take_kept(
        self, sid: str, room: str, peer: str, after_rn: int
    ) -> list[tuple[int, str]]:
        """Frames for a session live here that its inbox may have missed while it was
        down: those kept meanwhile, and those routed here past ``after_rn`` (the last
        delivered), as (rn, frame) in order."""

    @abstractmethod
    async def remove(self, sid: str, room: str, peer: str) -> bool:
        """End the session; True when this call took the peer out of the room (then the
        caller tells the room), False when another pod owns the session now or the room
        was told already."""

    async def sweep(self, room: str) -> list[PeerInfo]:
        """Remove members whose sessions expired; each is returned to exactly one caller."""
        return []


class Routing(ABC):
    """Frames for sessions this pod does not hold: to the pod that holds them, or kept."""

    # The bounds of a room's event history; replaced whole when the settings change.
    budget: RoomBudget = RoomBudget()
    # Events the history bounds dropped so far (oldest first), for the metrics.
    history_trimmed: int = 0

    @abstractmethod
    def relay(self, room: str, peer: str, text: str, done: RelayDone, resend: bool = False) -> None:
        """Route a frame to a peer that is not live on this pod, without waiting.

        Relays and the other operations of one pod are carried out in call order;
        ``done`` is called once with the outcome (for the sender's ack or error). With
        ``resend`` (the frame was answered `unavailable` before) a frame the session
        already has (routed to its pod, or kept) is answered as then, not routed again.
        """

    @abstractmethod
    async def keep(self, sid: str, room: str, peer: str, text: str, n: int | None = None) -> bool:
        """Keep (or forward, if it moved) a frame for a session this pod does not attach;
        bounded per session.

        True means the session is live on this very pod (a resume raced the frame): the
        caller delivers it.
        """

    @abstractmethod
    async def fan_out(
        self,
        room: str,
        text: str,
        *,
        screens_only: bool,
        exclude_sid: str,
        replay: bool,
        resend: bool = False,
    ) -> str:
        """Send a room frame to the room's members on other pods.

        With ``replay`` the frame (an encoded object) is appended to the room's stream
        first and returned with its ``offset`` and ``epoch``; local delivery is the
        caller's. With ``resend`` as well, a frame already among the room's latest
        events is returned as it was then, not sent again.
        """

    def backlog(self) -> int:
        """Operations started and not yet carried out (for back-pressure)."""
        return 0

    def caught_up(self) -> asyncio.Future[None]:
        """Done when the operations started so far have been carried out."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    @abstractmethod
    async def notify_takeover(self, old_pod: str, sid: str, replaced: bool) -> int:
        """Tell the session's previous pod to let it go; how many pods listened."""

    @abstractmethod
    async def takeover_done(self, new_pod: str, sid: str, recent: list[tuple[int, str]]) -> None:
        """Tell the session's new pod that every frame this pod held for it was passed on.

        ``recent`` are the last frames this pod sent the session (see ``detach``).
        """


class Presence(ABC):
    """This pod among the others: its connection, inbox, heartbeat and dead peers."""

    pod_id: str

    @abstractmethod
    async def start(self, on_inbox: InboxHandler) -> None:
        """Begin reaching the registry and listening on this pod's inbox; returns at
        once (a pod serves its health endpoint whether the registry answers or not)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def resume_secret(self) -> str:
        """The secret resume tokens are signed with; the same on every pod."""

    @abstractmethod
    async def heartbeat(self, stats: PodStats, sessions: list[SessionRecord]) -> list[str]:
        """Publish load; refresh this pod's sessions, and restore them if the registry lost
        them (Redis restart) or turned them to grace (this pod was thought dead).

        Returns the ids of sessions that resumed on another pod meanwhile: the caller
        lets them go.
        """

    async def reap_dead_pods(self) -> dict[str, int]:
        """Turn the sessions of pods whose heartbeat expired into grace, so they can
        resume anywhere; pod -> sessions turned, for the pods this call claimed."""
        return {}

    async def home_url(self, room: str) -> tuple[str, str] | None:
        """The room's home pod and its URL, as the operator placed it (``None``: not
        placed, or its home pod is gone); the embedded registry has no placement."""
        return None

    async def edges(self, records: list[EdgeRecord]) -> None:
        """Publish the state of the room edges' links this pod holds or just lost, for
        the operator (``MeetingRoom.status.edge``); the embedded registry keeps none."""
        return None

    def answering(self) -> bool:
        """False as soon as the registry stops answering (not only when a connection
        drops): what readiness follows between heartbeats."""
        return True

    @abstractmethod
    async def deregister(self) -> None: ...


@dataclass(frozen=True)
class Registry:
    """One backend's three roles, handed to the hub together."""

    sessions: Sessions
    routing: Routing
    presence: Presence
