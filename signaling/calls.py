"""Invites and calls: from `call:invite` to the call's history, race-safe across nodes.

Every decision that two nodes could make at once is an atomic operation in live state:
- one pending invite per caller: a claim on `invite:caller:{caller}`;
- accept, decline, cancel and expiry all `pop` the invite: exactly one of them gets it;
- a user is in at most one call: a claim on `call:user:{user}` for each participant;
- a call ends once: a claim on `call:end:{room}`; its bookkeeping is idempotent per participant
  (the chat_history row, keyed by room and user, is written before that user's metrics).
All delivery to users goes through the bus (their user channel), whichever node they are on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.clock import Clock, utc_from_timestamp, utcnow
from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from core.ids import NodeId, RoomId, UserId, is_uuid, new_id
from core.live import Bus, LiveState, Subscription, node_channel, user_channel
from core.store import BanStatus, CallEndReason, CallSummary, ChatMessage, Store
from sfu.token import mint_join_token
from signaling.placement import MediaEvent, PlacedRoom, Placement
from signaling.presence import Presence, call_key
from signaling.protocol import event
from signaling.timers import Timers

log = logging.getLogger(__name__)

ROOM_TTL = 7200.0
MAX_CHAT = 1000


@dataclass(frozen=True, slots=True)
class CallRules:
    min_seconds: int = 30
    max_seconds: int = 1800
    default_seconds: int = 300
    invite_ttl: int = 30
    reconnect_grace: float = 15.0
    cooldown: timedelta = timedelta(hours=24)
    join_token_ttl: int = 600


@dataclass(frozen=True, slots=True)
class Invite:
    invite_id: str
    from_id: str
    from_name: str
    to_id: str
    seconds: int
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {"inviteId": self.invite_id, "from": {"id": self.from_id, "name": self.from_name},
                "to": self.to_id, "seconds": self.seconds, "expiresAt": self.expires_at}

    @classmethod
    def from_json(cls, raw: str) -> Invite:
        d = json.loads(raw)
        return cls(d["inviteId"], d["from"]["id"], d["from"]["name"], d["to"], d["seconds"],
                   d["expiresAt"])


class CallService:
    def __init__(self, *, store: Store, live: LiveState, bus: Bus, presence: Presence,
                 placement: Placement, timers: Timers, clock: Clock, rules: CallRules,
                 node_secret: bytes, ice_servers: tuple[str, ...], node_id: str) -> None:
        self.store, self.live, self.bus = store, live, bus
        self.presence, self.placement, self.timers = presence, placement, timers
        self.clock, self.rules = clock, rules
        self.node_secret = node_secret
        self.ice_servers = [{"urls": url} for url in ice_servers]
        self.node_id = node_id
        self._commands: Subscription | None = None
        placement.on_media(self._on_media)

    async def start(self) -> None:
        """Listen for commands other nodes send this one (closing a room hosted here)."""
        self._commands = await self.bus.subscribe(node_channel(NodeId(self.node_id)),
                                                  self._on_command)

    async def close(self) -> None:
        if self._commands is not None:
            await self._commands.close()
            self._commands = None

    async def _on_command(self, message: str) -> None:
        command = json.loads(message)
        if command.get("cmd") == "close_room":
            await self.placement.close_room(str(command["roomId"]), str(command["reason"]))

    async def _close_room(self, room_id: str, node_id: str, reason: str) -> None:
        if node_id == self.node_id:
            await self.placement.close_room(room_id, reason)
        else:
            await self.bus.publish(node_channel(NodeId(node_id)), json.dumps(
                {"cmd": "close_room", "roomId": room_id, "reason": reason}))

    async def send(self, user_id: str, kind: str, **data: Any) -> None:
        await self.bus.publish(user_channel(UserId(user_id)), event(kind, **data))

    # ---- invites ----

    async def invite(self, caller_id: str, to: str, seconds: int | None) -> Invite:
        rules = self.rules
        seconds = rules.default_seconds if seconds is None else seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not (
            rules.min_seconds <= seconds <= rules.max_seconds
        ):
            raise InvalidArgument(
                f"seconds must be between {rules.min_seconds} and {rules.max_seconds}")
        if to == caller_id:
            raise InvalidArgument("you cannot invite yourself")
        callee = await self.store.users.get(UserId(to)) if is_uuid(to) else None
        caller = await self.store.users.get(UserId(caller_id))
        if callee is None or caller is None:
            raise NotFound("user not found")
        if callee.ban_status is not BanStatus.NONE:
            raise FailedPrecondition("user is not available")
        if await self.presence.current_call(caller_id) is not None:
            raise FailedPrecondition("you are in a call")
        state = await self.presence.state(to)
        if not state.online:
            raise FailedPrecondition("user is offline")
        if state.in_call is not None:
            raise FailedPrecondition("user is busy")
        if not state.available:
            raise FailedPrecondition("user is not available")
        if await self.store.cooldowns.active_until(UserId(caller_id), UserId(to)) is not None:
            raise FailedPrecondition("you met recently: try again later")
        invite_id = new_id()
        expires_at = self.clock.time() + rules.invite_ttl
        if not await self.live.claim(f"invite:caller:{caller_id}", invite_id, rules.invite_ttl):
            raise FailedPrecondition("you already have a pending invite")
        invite = Invite(invite_id, caller_id, caller.name, to, seconds, expires_at)
        await self.live.set(f"invite:{invite_id}", json.dumps(invite.to_json()),
                            ttl=rules.invite_ttl + 5)
        await self.live.set_add(f"invite:to:{to}", invite_id, rules.invite_ttl)
        self.timers.call_at(expires_at, f"invite:{invite_id}",
                            lambda: self._expire(invite_id))
        await self.send(to, "call:invite", **invite.to_json())
        return invite

    async def _take(self, invite_id: str) -> Invite | None:
        """Atomically take the invite: of accept, decline, cancel and expiry, one wins."""
        raw = await self.live.pop(f"invite:{invite_id}")
        if raw is None:
            return None
        invite = Invite.from_json(raw)
        self.timers.cancel(f"invite:{invite_id}")
        await self.live.release(f"invite:caller:{invite.from_id}", invite_id)
        await self.live.set_remove(f"invite:to:{invite.to_id}", invite_id)
        return invite

    async def _peek(self, invite_id: str) -> Invite:
        raw = await self.live.get(f"invite:{invite_id}") if is_uuid(invite_id) else None
        if raw is None:
            raise NotFound("invite not found or expired")
        return Invite.from_json(raw)

    async def _expire(self, invite_id: str) -> None:
        invite = await self._take(invite_id)
        if invite is not None:
            for user in (invite.from_id, invite.to_id):
                await self.send(user, "call:expired", inviteId=invite_id)

    async def decline(self, user_id: str, invite_id: str) -> None:
        await self._withdraw(user_id, invite_id, callee=True, kind="call:declined")

    async def cancel(self, user_id: str, invite_id: str) -> None:
        await self._withdraw(user_id, invite_id, callee=False, kind="call:cancelled")

    async def _withdraw(self, user_id: str, invite_id: str, *, callee: bool, kind: str) -> None:
        """The callee declines or the caller cancels: both sides hear `kind`."""
        invite = await self._peek(invite_id)
        if (invite.to_id if callee else invite.from_id) != user_id:
            raise PermissionDenied("not your invite")
        taken = await self._take(invite_id)
        if taken is None:
            raise NotFound("invite not found or expired")
        for user in (taken.from_id, taken.to_id):
            await self.send(user, kind, inviteId=invite_id)

    async def accept(self, user_id: str, invite_id: str) -> str:
        """Start the call; returns its room id. Two racing accepts start one call."""
        if (await self._peek(invite_id)).to_id != user_id:
            raise PermissionDenied("not your invite")
        invite = await self._take(invite_id)
        if invite is None:
            raise NotFound("invite not found or expired")
        room_id = new_id()
        ttl = invite.seconds + ROOM_TTL
        if not await self.live.claim(call_key(invite.to_id), room_id, ttl):
            await self.send(invite.from_id, "call:declined", inviteId=invite_id)
            raise FailedPrecondition("you are already in a call")
        if not await self.live.claim(call_key(invite.from_id), room_id, ttl):
            await self.live.release(call_key(invite.to_id), room_id)
            await self.send(invite.from_id, "call:declined", inviteId=invite_id)
            raise FailedPrecondition("the caller is in another call")
        placed: PlacedRoom | None = None
        try:
            placed = await self.placement.open_room(room_id)
            await self.live.set(f"room:sfu:{room_id}", placed.sfu_url, ttl=ttl)
            now = self.clock.time()
            ends_at = now + invite.seconds
            await self.store.calls.create(
                room_id=RoomId(room_id), caller_id=UserId(invite.from_id),
                callee_id=UserId(invite.to_id), node_id=placed.node_id,
                started_at=utc_from_timestamp(now), ends_at=utc_from_timestamp(ends_at))
        except Exception:
            if placed is not None:
                await self.placement.close_room(room_id, CallEndReason.FAILED.value)
            await self.live.release(call_key(invite.to_id), room_id)
            await self.live.release(call_key(invite.from_id), room_id)
            await self.send(invite.from_id, "call:declined", inviteId=invite_id)
            raise
        self._arm_end(room_id, ends_at)
        for user in (invite.from_id, invite.to_id):
            await self.send(user, "call:start", **(await self.call_info(room_id, user)))
            await self.presence.publish(user)
        return room_id

    def _arm_end(self, room_id: str, when: float) -> None:
        async def end() -> None:
            await self.end_call(room_id, CallEndReason.COMPLETED)

        self.timers.call_at(when, f"call:{room_id}", end)

    async def call_info(self, room_id: str, user_id: str) -> dict[str, Any]:
        """What a participant needs to (re)join: room, end time, partner, SFU URL and token."""
        call = await self.store.calls.get(RoomId(room_id))
        if call is None:
            raise NotFound("call not found")
        partner = call.callee_id if call.caller_id == user_id else call.caller_id
        partner_user = await self.store.users.get(partner)
        # The SFU hosting the room, whichever node asks (rooms live on the accepting node).
        placed_url = await self.live.get(f"room:sfu:{room_id}") or ""
        token = mint_join_token(self.node_secret, room_id, user_id, self.clock,
                                self.rules.join_token_ttl)
        messages = [
            {"roomId": room_id, "from": m.sender_id, "text": m.text,
             "sentAt": m.sent_at.timestamp(), "messageId": m.message_id}
            for m in await self.store.calls.messages(RoomId(room_id))
        ]
        return {
            "roomId": room_id,
            "endsAt": call.ends_at.timestamp(),
            "partner": {"id": partner, "name": partner_user.name if partner_user else ""},
            "sfu": {"url": placed_url, "token": token},
            "iceServers": self.ice_servers,
            "messages": messages,  # the chat so far, so a client that resumes can show it
        }

    # ---- during the call ----

    async def _room_of(self, user_id: str, room_id: str) -> None:
        if await self.presence.current_call(user_id) != room_id:
            raise FailedPrecondition("you are not in this call")

    async def message(self, user_id: str, room_id: str, text: str) -> dict[str, Any]:
        await self._room_of(user_id, room_id)
        text = text.strip()
        if not text or len(text) > MAX_CHAT:
            raise InvalidArgument(f"message must be 1 to {MAX_CHAT} characters")
        stored = await self.store.calls.add_message(RoomId(room_id), UserId(user_id), text,
                                                    utcnow(self.clock))
        call = await self.store.calls.get(RoomId(room_id))
        assert call is not None
        out = {"roomId": room_id, "from": user_id, "text": text,
               "sentAt": stored.sent_at.timestamp(), "messageId": stored.message_id}
        for user in (call.caller_id, call.callee_id):
            await self.send(user, "room:message", **out)
        return out

    async def leave(self, user_id: str, room_id: str) -> None:
        await self._room_of(user_id, room_id)
        await self.end_call(room_id, CallEndReason.LEFT)

    async def socket_lost(self, user_id: str) -> None:
        """The user's last socket closed: give them the grace period to come back."""
        room_id = await self.presence.current_call(user_id)
        if room_id is None:
            return
        when = self.clock.time() + self.rules.reconnect_grace
        self.timers.call_at(when, f"grace:{user_id}",
                            lambda: self._grace_over(user_id, room_id))

    async def _grace_over(self, user_id: str, room_id: str) -> None:
        if await self.presence.is_online(user_id):
            return
        if await self.presence.current_call(user_id) == room_id:
            await self.end_call(room_id, CallEndReason.DISCONNECTED)

    def _on_media(self, media: MediaEvent) -> None:
        self.timers.call_at(self.clock.time(), f"media:{media.room_id}:{media.user_id}",
                            lambda: self._tell_media(media))

    async def _tell_media(self, media: MediaEvent) -> None:
        call = await self.store.calls.get(RoomId(media.room_id))
        if call is None or call.ended_at is not None:
            return
        for user in (call.caller_id, call.callee_id):
            await self.send(user, "call:media", roomId=media.room_id, userId=media.user_id,
                            state=media.state)

    # ---- the end ----

    async def end_call(self, room_id: str, reason: CallEndReason) -> bool:
        """End the call once; True for the caller that did the bookkeeping."""
        if not await self.live.claim(f"call:end:{room_id}", "1", ROOM_TTL):
            return False
        try:
            return await self._finish(room_id, reason)
        except BaseException:
            await self.live.release(f"call:end:{room_id}", "1")  # let a retry or the sweeper
            raise

    async def _finish(self, room_id: str, reason: CallEndReason) -> bool:
        call = await self.store.calls.get(RoomId(room_id))
        if call is None or call.ended_at is not None:
            return False
        self.timers.cancel(f"call:{room_id}")
        now = utcnow(self.clock)
        ended = min(now, call.ends_at)
        duration = max(0, int((ended - call.started_at).total_seconds()))
        messages = tuple(ChatMessage(m.sender_id, m.text, m.sent_at)
                         for m in await self.store.calls.messages(RoomId(room_id)))
        users = {u.user_id: u for u in [await self.store.users.get(call.caller_id),
                                        await self.store.users.get(call.callee_id)] if u}
        for me, partner in ((call.caller_id, call.callee_id), (call.callee_id, call.caller_id)):
            partner_name = users[partner].name if partner in users else ""
            try:
                await self.store.chat_history.add(
                    session_id=f"{room_id}:{me}", user_id=me, partner_id=partner,
                    partner_name=partner_name, room_id=RoomId(room_id),
                    started_at=call.started_at, duration_seconds=duration, messages=messages)
            except AlreadyExists:
                continue  # this participant's record is already written
            await self.store.users.record_call(me, CallSummary(
                partner, partner_name, RoomId(room_id), duration, ended))
        await self.store.cooldowns.set(call.caller_id, call.callee_id, now + self.rules.cooldown)
        await self.store.calls.mark_ended(RoomId(room_id), reason, now)
        for user in (call.caller_id, call.callee_id):
            await self.live.release(call_key(user), room_id)
            self.timers.cancel(f"grace:{user}")
        await self.live.delete(f"room:sfu:{room_id}")
        try:
            await self._close_room(room_id, call.node_id, reason.value)
        except Exception:
            log.exception("closing room %s on its SFU failed", room_id)
        for user in (call.caller_id, call.callee_id):
            await self.send(user, "call:ended", roomId=room_id, reason=reason.value,
                            durationSeconds=duration)
            await self.presence.publish(user)
        return True

    async def sweep(self) -> int:
        """Finish calls whose time ran out while no node was watching (a node died)."""
        cutoff = utcnow(self.clock) - timedelta(seconds=self.rules.reconnect_grace)
        finished = 0
        for call in await self.store.calls.unfinished(ends_before=cutoff):
            if await self.end_call(call.room_id, CallEndReason.NODE_LOST):
                finished += 1
        return finished

    async def resume_timers(self, node_id: str) -> None:
        """After a restart, re-arm end timers for this node's calls still running."""
        for call in await self.store.calls.unfinished(
            ends_before=utcnow(self.clock) + timedelta(seconds=self.rules.max_seconds + 1)
        ):
            if call.node_id != node_id:
                continue
            self._arm_end(call.room_id, call.ends_at.timestamp())

    async def pending_invites(self, user_id: str) -> dict[str, Any]:
        incoming = []
        for invite_id in await self.live.set_members(f"invite:to:{user_id}"):
            raw = await self.live.get(f"invite:{invite_id}")
            if raw is not None:
                incoming.append(Invite.from_json(raw).to_json())
        outgoing = None
        mine = await self.live.get(f"invite:caller:{user_id}")
        if mine is not None:
            raw = await self.live.get(f"invite:{mine}")
            if raw is not None:
                outgoing = Invite.from_json(raw).to_json()
        return {"incoming": incoming, "outgoing": outgoing}
