"""Join and resume: a connection becomes a session, new or taken over from another
connection or pod, and receives what it missed, in order; and the old pod's side of a
takeover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from typing import Any

from ..protocol import (
    CloseCode,
    Connection,
    ErrorCode,
    Handover,
    Join,
    ResumeClaim,
    error,
    joined,
    make_resume_token,
    peer_joined,
    read_resume_token,
)
from ..registry import RegistryError, ResumeBusy, RoomFull
from ..tokens import TokenError
from .attachment import Attachment
from .delivery import Delivery
from .sessions import LocalSession
from .state import PodPart, PodState

log = logging.getLogger("signaling")


class ResumeUnderWay(Exception):
    """Another connection is resuming the same session on this pod right now."""


class Joins(PodPart):
    """Carries out the protocol core's Join intent, and answers takeovers."""

    def __init__(self, pod: PodState, delivery: Delivery) -> None:
        self.pod = pod
        self.registry_sessions = pod.registry.sessions
        self.routing = pod.registry.routing
        self.pod_id = pod.pod_id
        self.index = pod.index
        self.sessions = pod.index.sessions
        self.by_peer = pod.index.by_peer
        self.delivery = delivery
        self._takeover_waits: dict[str, asyncio.Future[list[tuple[int, str]]]] = {}
        self._resuming: set[str] = set()  # sessions with a resume under way here

    async def join(self, conn: Connection, att: Attachment, j: Join) -> LocalSession | None:
        """The session now attached to ``att``; None (the client told why, the socket
        closing) when the join was refused."""
        d = self.delivery
        cap = self.settings.max_rooms
        if cap and j.room not in self.index.rooms and len(self.index.rooms) >= cap:
            # A budget of this pod, not of the room: another pod will take the room.
            conn.join_refused()
            self.pod.metrics.budget_refused.inc("rooms")
            d.send_direct(att, error(ErrorCode.POD_FULL, f"this pod holds {cap} rooms", j.id))
            await d.close_socket(att, CloseCode.TRY_AGAIN_LATER, "pod full")
            return None
        try:
            if not self.pod.resume_secret:
                raise RegistryError("registry not reached yet")
            if j.resume is not None:
                session = await self._resume(att, j)
            else:
                session = None
            if session is None:
                if not j.authorized:
                    # The session is over: a new one needs a join token like any other.
                    raise TokenError("the session ended; a join token is required")
                session = await self._fresh_join(att, j)
        except RoomFull as e:
            conn.join_refused()
            d.send_direct(att, error(ErrorCode.ROOM_FULL, str(e), j.id))
            await d.close_socket(att, CloseCode.TRY_AGAIN_LATER, "room full")
            return None
        except (ResumeUnderWay, ResumeBusy):
            conn.join_refused()
            d.send_direct(
                att,
                error(
                    ErrorCode.ALREADY_JOINED, "this session is resuming on another connection", j.id
                ),
            )
            await d.close_socket(att, CloseCode.REPLACED, "resume under way elsewhere")
            return None
        except TokenError as e:
            conn.join_refused()
            d.send_direct(att, error(ErrorCode.UNAUTHORIZED, f"resume refused: {e}", j.id))
            await d.close_socket(att, CloseCode.POLICY, "unauthorized")
            return None
        except RegistryError as e:
            conn.join_refused()
            log.warning("join failed: %s", e)
            d.send_direct(att, error(ErrorCode.UNAVAILABLE, "registry unavailable, retry", j.id))
            await d.close_socket(att, CloseCode.TRY_AGAIN_LATER, "registry unavailable")
            return None
        conn.join_accepted(session.room, session.peer, session.role)
        return session

    async def _fresh_join(self, att: Attachment, j: Join) -> LocalSession:
        sid = secrets.token_hex(12)
        token = make_resume_token(self.pod.resume_secret, ResumeClaim(sid, j.room, j.peer, j.role))
        # Indexed (holding frames) before it is registered, so that nothing sent to it
        # between registration and `joined` is lost.
        session = LocalSession(
            sid, j.room, j.peer, j.role, token, attachment=att, resuming=[], edge=att.edge
        )
        old_local = self.by_peer.get((j.room, j.peer))
        self.index.add(session)
        try:
            out = await self.registry_sessions.join(
                sid, j.room, j.peer, j.role, self.limits.max_peers_per_room
            )
        except BaseException:
            self.index.remove(session)
            if old_local is not None and old_local.sid in self.sessions:
                self.by_peer[(j.room, j.peer)] = old_local
            raise
        if out.replaced_sid is not None:
            old = self.sessions.get(out.replaced_sid)
            if old is not None:
                await self.delivery.drop(old, CloseCode.REPLACED, "replaced by a new connection")
            elif out.replaced_pod:
                await self.routing.notify_takeover(out.replaced_pod, out.replaced_sid, True)
        # The room hears of the peer before the peer hears `joined`: whoever it then talks
        # to already knows it.
        await self.delivery.room_notice(j.room, peer_joined(j.peer, j.role.value), sid, att.edge)
        self.delivery.send_direct(
            att,
            joined(
                room=j.room,
                peer=j.peer,
                role=j.role,
                session=sid,
                resume=token,
                peers=((p.peer, p.role) for p in out.peers),
                epoch=out.epoch,
                offset=out.offset,
                pod=self.pod_id,
                frame_id=j.id,
            ),
        )
        self._release(session, [])
        return session

    def _release(self, s: LocalSession, kept: list[tuple[int, str]]) -> None:
        """End holding: kept and held frames merged by their order n, then arrival."""
        held, s.resuming = s.resuming or [], None
        merged = [(float(n), -1, text) for n, text in kept] + held
        for order, _, text in sorted(merged, key=lambda h: (h[0], h[1])):
            self.delivery.deliver(s, text)
            if order != float("inf"):
                s.last_rn = max(s.last_rn, int(order))

    async def _resume(self, att: Attachment, j: Join) -> LocalSession | None:
        """One resume of a session at a time on this pod, and the first one wins: a
        second connection resuming with the same token while the first is under way (a
        client retrying too early) would otherwise interleave with it, and frames could
        reach it before its ``joined`` or be lost with the first. The second is refused
        and closed with 4001; a resume after the first completed takes over as usual.
        Across pods the registry keeps them apart the same way (``ResumeBusy``)."""
        assert j.resume is not None
        claim = read_resume_token(self.pod.resume_secret, j.resume, j.room, j.peer)
        if claim.session in self._resuming:
            raise ResumeUnderWay(claim.session)
        self._resuming.add(claim.session)
        attempt = secrets.token_hex(8)
        try:
            return await self._resume_locked(att, j, claim, attempt)
        finally:
            self._resuming.discard(claim.session)
            self.pod.spawn(self._resumed(claim, attempt))

    async def _resumed(self, claim: ResumeClaim, attempt: str) -> None:
        """The attempt is over: another resume may take the session over from now on."""
        with contextlib.suppress(RegistryError):
            await self.registry_sessions.resumed(claim.room, claim.peer, attempt)

    async def _resume_locked(
        self, att: Attachment, j: Join, claim: ResumeClaim, attempt: str
    ) -> LocalSession | None:
        assert j.resume is not None
        s = self.sessions.get(claim.session)
        created = s is None
        if s is not None:
            old_att = s.attachment
            s.attachment = att
            if s.grace_timer is not None:
                s.grace_timer.cancel()
                s.grace_timer = None
            if old_att is not None:
                await self.delivery.close_socket(
                    old_att, CloseCode.REPLACED, "resumed on a new connection"
                )
        else:
            s = LocalSession(
                claim.session, claim.room, claim.peer, claim.role, j.resume, attachment=att
            )
            self.index.add(s)
        s.edge = att.edge
        s.resuming = []
        try:
            out = await self.registry_sessions.resume(
                claim.session, claim.room, claim.peer, claim.role, j.last_rn, attempt
            )
        except ResumeBusy:
            # Another pod's resume won: this connection never had the session. Its
            # takeover notice drops what is left here.
            s.resuming = None
            if s.attachment is att:
                s.attachment = None
            if created:
                self.index.remove(s)
            raise
        except BaseException:
            s.resuming = None
            raise
        if out is None:
            # Too late: the grace period is over and the room saw the peer leave.
            s.resuming = None
            self.index.remove(s)
            s.attachment = None
            return None
        recent = {q: t for q, t in [*out.recent, *s.recent]}
        if out.old_pod and out.old_pod != self.pod_id:
            # Wait (bounded) until the old pod has passed on what it held for the session.
            waiter: asyncio.Future[list[tuple[int, str]]] = (
                asyncio.get_running_loop().create_future()
            )
            self._takeover_waits[s.sid] = waiter
            try:
                if await self.routing.notify_takeover(out.old_pod, s.sid, False) > 0:
                    with contextlib.suppress(TimeoutError):
                        recent.update(await asyncio.wait_for(waiter, 1.0))
            except RegistryError as e:
                log.warning("takeover notice for %s failed: %s", s.sid, e)
            finally:
                self._takeover_waits.pop(s.sid, None)
        # Frames sent on the lost connection that the client says it did not get.
        resend = (
            sorted((q, t) for q, t in recent.items() if q > j.last_seq)
            if j.last_seq is not None
            else []
        )
        s.seq = max(s.seq, out.seq, j.last_seq or 0, *(q for q in recent))
        # A frame re-sent from the lost connection keeps its seq; drop its routed copy.
        resent_rn = {rn for _, t in resend if (rn := _rn_of(t)) is not None}
        s.last_rn = max(s.last_rn, j.last_rn or 0, *resent_rn)
        kept = [(n, t) for n, t in out.kept if n not in resent_rn]
        held_n = len(s.resuming or [])
        peers = await self._peers(s)
        self.delivery.send_direct(
            att,
            joined(
                room=s.room,
                peer=s.peer,
                role=s.role,
                session=s.sid,
                resume=s.resume_token,
                peers=peers,
                epoch="",
                offset=0,
                pod=self.pod_id,
                handover=Handover(len(out.kept) + held_n, out.dropped),
                frame_id=j.id,
            ),
        )
        s.recent.clear()
        for q, t in resend:
            s.recent.append((q, t))
            att.emit(t)
        self._release(s, kept)
        return s

    async def _peers(self, s: LocalSession) -> list[tuple[str, str]]:
        """The room's other members as (peer, role)."""
        return [
            (p.peer, p.role)
            for p in await self.registry_sessions.members(s.room)
            if p.peer != s.peer
        ]

    # ---- takeover: a session of this pod resumed on another ---------------------------

    async def hand_over(self, sid: str, new_pod: str, replaced: bool) -> None:
        """The old pod's side: drop the session here and pass on its recent frames."""
        s = self.sessions.get(sid)
        recent: list[tuple[int, str]] = []
        if s is not None and new_pod != self.pod_id:
            recent = list(s.recent)
            if sid in self._resuming:
                # A resume of it is under way here and has lost (the winner holds the
                # session in Redis): its connection hears so from its own attempt
                # (already-joined, 4001), not a bare close from this notice.
                s.attachment = None
            await self.delivery.drop(s, CloseCode.REPLACED, "session resumed elsewhere")
        if not replaced:
            # Inbox messages are handled in order, so everything this pod held for
            # the session has been passed on by now.
            with contextlib.suppress(RegistryError):
                await self.routing.takeover_done(new_pod, sid, recent)

    def takeover_done(self, sid: str, items: list[Any]) -> None:
        """The new pod's side: the old pod passed the session on with its recent frames
        (as ``[seq, text]`` pairs); the resume waiting for them goes on."""
        waiter = self._takeover_waits.get(sid)
        if waiter is not None and not waiter.done():
            waiter.set_result([(int(q), str(t)) for q, t in items])


_RN = re.compile(r',"rn":(\d+),"seq":\d+}$')


def _rn_of(stamped: str) -> int | None:
    m = _RN.search(stamped)
    return int(m.group(1)) if m else None
