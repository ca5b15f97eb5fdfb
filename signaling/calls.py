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
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from core.clock import Clock, iso_utc, utc_from_timestamp, utcnow
from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from core.ids import NodeId, RoomId, UserId, is_uuid, new_id
from core.live import Bus, LiveState, Subscription, node_channel, user_channel
from core.store import BanStatus, Call, CallEndReason, CallSummary, ChatMessage, Store
from sfu.token import mint_join_token
from signaling.placement import MediaEvent, PlacedRoom, Placement
from signaling.presence import Presence, call_key
from signaling.protocol import event
from signaling.timers import Timers
from turn.servers import IceServers

log = logging.getLogger(__name__)

ROOM_TTL = 7200.0
MAX_CHAT = 1000
LAST_CALL_TTL = 3600.0  # seconds `state.lastCall` tells a returning client how its call ended
BEAT = 2.0  # seconds between a node's vouches for its rooms (the calls' alive_at)
DEAD_AFTER = 15.0  # seconds without a vouch before another node's calls count as lost
RECORD_RETRY_MAX = 30.0  # seconds: the longest wait between retries of an end's record
PENDING_ENDS = "call:ended:pending"  # live set: rooms whose decided end awaits its record
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallRules:
    min_seconds: int = 30
    max_seconds: int = 1800
    default_seconds: int = 300
    invite_ttl: int = 30
    reconnect_grace: float = 15.0
    cooldown: timedelta = timedelta(hours=24)
    join_token_ttl: int = 600
    recording: bool = False  # calls may be recorded when both participants agree


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What ending a call needs without the database: who, where, and when (clock seconds).
    Kept in live state as `call:info:{room}` while the call runs."""

    room_id: str
    caller_id: str
    callee_id: str
    node_id: str
    started_at: float
    ends_at: float

    @classmethod
    def of(cls, call: Call) -> CallFacts:
        return cls(str(call.room_id), str(call.caller_id), str(call.callee_id), call.node_id,
                   call.started_at.timestamp(), call.ends_at.timestamp())

    def to_json(self) -> str:
        return json.dumps({"roomId": self.room_id, "caller": self.caller_id,
                           "callee": self.callee_id, "node": self.node_id,
                           "startedAt": self.started_at, "endsAt": self.ends_at})

    @classmethod
    def from_json(cls, raw: str) -> CallFacts:
        d = json.loads(raw)
        return cls(d["roomId"], d["caller"], d["callee"], d["node"], float(d["startedAt"]),
                   float(d["endsAt"]))


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How a call ended, decided once: the reason and when (clock seconds)."""

    reason: CallEndReason
    ended_at: float

    def duration(self, facts: CallFacts) -> int:
        """Whole seconds from the start to the end (at the database's microsecond precision,
        so that a call of exactly N seconds is N, not N - 1)."""
        span = utc_from_timestamp(self.ended_at) - utc_from_timestamp(facts.started_at)
        return max(0, int(span.total_seconds()))

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason.value, "endedAt": self.ended_at}

    @classmethod
    def from_json(cls, raw: str) -> CallEnd:
        d = json.loads(raw)
        return cls(CallEndReason(d["reason"]), float(d["endedAt"]))


@dataclass(frozen=True, slots=True)
class Invite:
    invite_id: str
    from_id: str
    from_name: str
    to_id: str
    seconds: int
    expires_at: float
    record: bool = False  # the caller asks to record the call (and consents to it)

    def to_json(self) -> dict[str, Any]:
        return {"inviteId": self.invite_id, "from": {"id": self.from_id, "name": self.from_name},
                "to": self.to_id, "seconds": self.seconds, "expiresAt": self.expires_at,
                "record": self.record}

    def wire(self) -> dict[str, Any]:
        """As the protocol sends it: the expiry in ISO 8601."""
        return {**self.to_json(), "expiresAt": iso_utc(self.expires_at)}

    @classmethod
    def from_json(cls, raw: str) -> Invite:
        d = json.loads(raw)
        return cls(d["inviteId"], d["from"]["id"], d["from"]["name"], d["to"], d["seconds"],
                   d["expiresAt"], bool(d.get("record", False)))


class CallService:
    def __init__(self, *, store: Store, live: LiveState, bus: Bus, presence: Presence,
                 placement: Placement, timers: Timers, clock: Clock, rules: CallRules,
                 node_secret: bytes, ice: IceServers, region: str, node_id: str) -> None:
        self.store, self.live, self.bus = store, live, bus
        self.presence, self.placement, self.timers = presence, placement, timers
        self.clock, self.rules = clock, rules
        self.node_secret = node_secret
        self.ice, self.region = ice, region  # ICE servers of this node's region, for clients
        self.node_id = node_id
        self._commands: Subscription | None = None
        # Ends decided here whose durable record waits for the database, by room.
        self._pending: dict[str, tuple[CallFacts, CallEnd]] = {}
        # Since when (clock seconds) this node has reached the database without a failure.
        self.reachable_since: float | None = None
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

    async def invite(self, caller_id: str, to: str, seconds: int | None, *,
                     record: bool = False) -> Invite:
        """Invite `to` for `seconds`; `record`: the caller asks to record the call (refused
        with FailedPrecondition when recording is off on this service)."""
        rules = self.rules
        if record and not rules.recording:
            raise FailedPrecondition("calls are not recorded on this service")
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
        invite = Invite(invite_id, caller_id, caller.name, to, seconds, expires_at, record)
        await self.live.set(f"invite:{invite_id}", json.dumps(invite.to_json()),
                            ttl=rules.invite_ttl + 5)
        await self.live.set_add(f"invite:to:{to}", invite_id, rules.invite_ttl)
        self.timers.call_at(expires_at, f"invite:{invite_id}",
                            lambda: self._expire(invite_id))
        await self.send(to, "call:invite", **invite.wire())
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

    async def accept(self, user_id: str, invite_id: str, *, record: bool = False) -> str:
        """Start the call; returns its room id. Two racing accepts start one call. It is
        recorded only when recording is on, the caller asked and the callee agrees (`record`)."""
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
            recorded = self.rules.recording and invite.record and record
            call = await self.store.calls.create(
                room_id=RoomId(room_id), caller_id=UserId(invite.from_id),
                callee_id=UserId(invite.to_id), node_id=placed.node_id,
                started_at=utc_from_timestamp(now), ends_at=utc_from_timestamp(ends_at),
                recorded=recorded)
            if recorded:
                participants = [UserId(invite.from_id), UserId(invite.to_id)]
                await self.store.recordings.start(RoomId(room_id), participants,
                                                  placed.node_id)
                await self.placement.start_recording(room_id)
            await self.live.set(f"call:info:{room_id}", CallFacts.of(call).to_json(), ttl=ttl)
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
             "sentAt": iso_utc(m.sent_at.timestamp()), "messageId": m.message_id}
            for m in await self.store.calls.messages(RoomId(room_id))
        ]
        return {
            "roomId": room_id,
            "endsAt": iso_utc(call.ends_at.timestamp()),
            "partner": {"id": partner, "name": partner_user.name if partner_user else ""},
            "sfu": {"url": placed_url, "token": token},
            "recorded": call.recorded,  # both agreed: the call screen shows it to both
            "iceServers": self.ice.for_user(user_id, self.region).servers,
            "messages": messages,  # the chat so far, so a client that resumes can show it
        }

    # ---- during the call ----

    async def join_grant(self, user_id: str, room_id: str) -> dict[str, Any]:
        """A fresh SFU join token for a participant of a running call (a token lives
        `join_token_ttl` seconds, calls may run longer): `{"sfu": {"url", "token"},
        "expiresAt"}`. FailedPrecondition when the user is not in that call."""
        await self._room_of(user_id, room_id)
        token = mint_join_token(self.node_secret, room_id, user_id, self.clock,
                                self.rules.join_token_ttl)
        url = await self.live.get(f"room:sfu:{room_id}") or ""
        return {"sfu": {"url": url, "token": token},
                "expiresAt": iso_utc(self.clock.time() + self.rules.join_token_ttl)}

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
               "sentAt": iso_utc(stored.sent_at.timestamp()), "messageId": stored.message_id}
        for user in (call.caller_id, call.callee_id):
            await self.send(user, "room:message", **out)
        return out

    async def media_state(self, user_id: str, room_id: str, *, audio: bool, video: bool
                          ) -> None:
        """A participant turned their microphone or camera on or off (a disabled track still
        sends silence or black frames, so the partner cannot tell from the media): tell both
        participants, on whatever node, and keep it for a client that resumes the call."""
        await self._room_of(user_id, room_id)
        call = await self.store.calls.get(RoomId(room_id))
        if call is None or call.ended_at is not None:
            raise FailedPrecondition("the call is over")
        sending = {"audio": audio, "video": video}
        await self.live.set(f"call:sending:{room_id}:{user_id}", json.dumps(sending),
                            ttl=ROOM_TTL)
        for user in (call.caller_id, call.callee_id):
            await self.send(user, "room:media", roomId=room_id, userId=user_id, **sending)

    async def sending(self, room_id: str, user_id: str) -> dict[str, bool] | None:
        """What `user_id` last said it sends in that call (`{"audio", "video"}`), or None."""
        raw = await self._best_effort(self.live.get(f"call:sending:{room_id}:{user_id}"),
                                      "media state")
        if raw is None:
            return None
        data = json.loads(raw)
        return {"audio": bool(data.get("audio")), "video": bool(data.get("video"))}

    async def leave(self, user_id: str, room_id: str) -> None:
        await self._room_of(user_id, room_id)
        await self.end_call(room_id, CallEndReason.LEFT)

    async def socket_lost(self, user_id: str) -> None:
        """The user's last socket closed: give them the grace period to come back."""
        room_id = await self.presence.current_call(user_id)
        if room_id is None:
            return
        lost_at = self.clock.time()
        self.timers.call_at(lost_at + self.rules.reconnect_grace, f"grace:{user_id}",
                            lambda: self._grace_over(user_id, room_id, lost_at))

    async def _grace_over(self, user_id: str, room_id: str, lost_at: float) -> None:
        """Nobody came back: the call ended when the connection was lost."""
        if await self.presence.is_online(user_id):
            return
        if await self.presence.current_call(user_id) == room_id:
            await self.end_call(room_id, CallEndReason.DISCONNECTED, at=lost_at)

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

    async def end_call(self, room_id: str, reason: CallEndReason, *,
                       at: float | None = None) -> bool:
        """End the call once, as `reason`, at `at` (clock seconds; now when None), never
        later than its scheduled end nor before its start. True for the caller that decided.

        The end is announced (room closed, `call:ended` to both, presence) even while the
        database is down; its durable record (history, metrics, cooldown, the calls row) is
        then retried until it is written, with the reason and time decided here.
        """
        if not await self.live.claim(f"call:end:{room_id}", "1", ROOM_TTL):
            return False
        try:
            facts = await self._facts(room_id)
        except BaseException:
            await self.live.release(f"call:end:{room_id}", "1")  # let a retry or the sweeper
            raise
        if facts is None:
            return False
        when = self.clock.time() if at is None else at
        decision = CallEnd(reason, max(facts.started_at, min(when, facts.ends_at)))
        self.timers.cancel(f"call:{room_id}")
        try:
            await self._record(facts, decision)
        except Exception as exc:
            log.warning("call %s ended (%s) but its record waits for the database: %s",
                        room_id, reason.value, getattr(exc, "message", type(exc).__name__))
            await self._record_later(facts, decision)
        await self._announce(facts, decision)
        return True

    async def _facts(self, room_id: str) -> CallFacts | None:
        """Who is in the call and when it runs, from live state or, failing that, the
        database; None for a call that is unknown or already ended."""
        raw = await self._best_effort(self.live.get(f"call:info:{room_id}"), "call facts")
        if raw:
            return CallFacts.from_json(raw)
        call = await self.store.calls.get(RoomId(room_id))
        if call is None or call.ended_at is not None:
            return None
        return CallFacts.of(call)

    async def _record(self, facts: CallFacts, decision: CallEnd) -> None:
        """The durable part of an end: idempotent, so a retry or the sweeper may repeat it."""
        room_id = RoomId(facts.room_id)
        ended = utc_from_timestamp(decision.ended_at)
        started = utc_from_timestamp(facts.started_at)
        duration = decision.duration(facts)
        messages = tuple(ChatMessage(m.sender_id, m.text, m.sent_at)
                         for m in await self.store.calls.messages(room_id))
        caller, callee = UserId(facts.caller_id), UserId(facts.callee_id)
        users = {u.user_id: u for u in [await self.store.users.get(caller),
                                        await self.store.users.get(callee)] if u}
        for me, partner in ((caller, callee), (callee, caller)):
            partner_name = users[partner].name if partner in users else ""
            try:
                await self.store.chat_history.add(
                    session_id=f"{room_id}:{me}", user_id=me, partner_id=partner,
                    partner_name=partner_name, room_id=room_id,
                    started_at=started, duration_seconds=duration, messages=messages)
            except AlreadyExists:
                continue  # this participant's record is already written
            await self.store.users.record_call(me, CallSummary(
                partner, partner_name, room_id, duration, ended))
        await self.store.cooldowns.set(caller, callee, ended + self.rules.cooldown)
        await self.store.calls.mark_ended(room_id, decision.reason, ended)
        self._pending.pop(facts.room_id, None)
        await self._best_effort(self.live.set_remove(PENDING_ENDS, facts.room_id), "end record")
        await self._best_effort(self.live.delete(f"call:ended:{facts.room_id}"), "end record")

    async def _record_later(self, facts: CallFacts, decision: CallEnd, delay: float = 1.0
                            ) -> None:
        """Keep the decision (here, and in live state for the sweeper on any node) and retry
        the durable record with backoff up to RECORD_RETRY_MAX seconds."""
        self._pending[facts.room_id] = (facts, decision)
        await self._best_effort(self.live.set(
            f"call:ended:{facts.room_id}", json.dumps(decision.to_json()), ttl=ROOM_TTL),
            "end record")
        await self._best_effort(self.live.set_add(PENDING_ENDS, facts.room_id, ROOM_TTL),
                                "end record")

        async def retry() -> None:
            if facts.room_id not in self._pending:
                return  # the sweeper wrote it meanwhile
            try:
                await self._record(facts, decision)
            except Exception:
                await self._record_later(facts, decision, min(delay * 2, RECORD_RETRY_MAX))

        self.timers.call_at(self.clock.time() + delay, f"record:{facts.room_id}", retry)

    async def _announce(self, facts: CallFacts, decision: CallEnd) -> None:
        """Everything but the durable record, each step on its own, so that an outage of
        live state cannot keep the room open or the participants uninformed; live keys
        that could not be cleared are retried until they are."""
        room_id = facts.room_id
        duration = decision.duration(facts)
        for user in (facts.caller_id, facts.callee_id):
            self.timers.cancel(f"grace:{user}")
        await self._clear_live(facts, decision)
        await self._best_effort(self._close_room(room_id, facts.node_id,
                                                 decision.reason.value), "closing the room")
        for user in (facts.caller_id, facts.callee_id):
            await self._best_effort(self.send(
                user, "call:ended", roomId=room_id, reason=decision.reason.value,
                durationSeconds=duration), "call:ended")
            await self._best_effort(self.presence.publish(user), "presence")

    async def _clear_live(self, facts: CallFacts, decision: CallEnd, delay: float = 1.0
                          ) -> None:
        """Free both participants (their call keys), drop the room's keys and leave each
        participant `call:last`; on a live-state failure, again later with backoff."""
        room_id = facts.room_id
        last = json.dumps({"roomId": room_id, "reason": decision.reason.value,
                           "durationSeconds": decision.duration(facts),
                           "endedAt": decision.ended_at})
        try:
            for user in (facts.caller_id, facts.callee_id):
                await self.live.release(call_key(user), room_id)
                await self.live.set(f"call:last:{user}", last, ttl=LAST_CALL_TTL)
            await self.live.delete(f"room:sfu:{room_id}")
            await self.live.delete(f"call:info:{room_id}")
        except Exception as exc:
            log.warning("clearing live state of call %s failed (again in %.0f s): %s",
                        room_id, delay, getattr(exc, "message", type(exc).__name__))

            async def again() -> None:
                await self._clear_live(facts, decision, min(delay * 2, RECORD_RETRY_MAX))

            self.timers.call_at(self.clock.time() + delay, f"clear:{room_id}", again)

    async def _best_effort(self, step: Awaitable[T], what: str) -> T | None:
        try:
            return await step
        except Exception as exc:
            log.warning("%s failed: %s", what, getattr(exc, "message", type(exc).__name__))
            return None

    async def last_call(self, user_id: str) -> dict[str, Any] | None:
        """How the user's latest call ended (`roomId`, `reason`, `durationSeconds`,
        `endedAt`), for a client that was away when `call:ended` was sent; kept an hour."""
        raw = await self._best_effort(self.live.get(f"call:last:{user_id}"), "last call")
        if raw is not None:
            last = dict(json.loads(raw))
            return {**last, "endedAt": iso_utc(float(last["endedAt"]))}
        # Live state forgets (a single node's memory across a restart): the record does not.
        call = await self.store.calls.last_ended(UserId(user_id))
        if call is None or call.ended_at is None or call.end_reason is None:
            return None
        ended_at = call.ended_at.timestamp()
        if ended_at < self.clock.time() - LAST_CALL_TTL:
            return None
        return {"roomId": str(call.room_id), "reason": call.end_reason.value,
                "durationSeconds": CallEnd(call.end_reason, ended_at).duration(
                    CallFacts.of(call)),
                "endedAt": iso_utc(ended_at)}

    # ---- node liveness and recovery ----

    async def vouch(self) -> None:
        """Every BEAT seconds: record in the database that this node's rooms are up (the
        calls' `alive_at`), and track since when this node has reached the database."""
        now = self.clock.time()
        try:
            rooms = [RoomId(r) for r in self.placement.room_ids()]
            if rooms:
                await self.store.calls.touch(rooms, utc_from_timestamp(now))
            else:
                await self.store.ping()
        except Exception:
            self.reachable_since = None
            raise
        if self.reachable_since is None:
            self.reachable_since = now

    async def sweep(self) -> int:
        """Finish every call that nobody else will, truthfully; returns how many.

        - a decided end whose record is pending (a database outage) is written as decided;
        - a call of this node whose room is gone (the node restarted) ended `node_lost` when
          the node last vouched for it (`alive_at`);
        - a call of another node that has not vouched for DEAD_AFTER seconds, while this node
          has reached the database all that time, ended `node_lost` at its `alive_at`;
        - a call past its end (and the reconnect grace) whose node still vouches for it ran to
          its end: `completed` (its own timer failed, for example the database was down).
        """
        now = self.clock.time()
        steady = (self.reachable_since is not None
                  and now - self.reachable_since >= DEAD_AFTER)
        finished = 0
        pending = set(self._pending)
        pending |= await self._best_effort(self.live.set_members(PENDING_ENDS),
                                           "end records") or set()
        horizon = utcnow(self.clock) + timedelta(days=1)  # every call still running
        for call in await self.store.calls.unfinished(ends_before=horizon, limit=500):
            room_id = str(call.room_id)
            try:
                decided = await self._decided(room_id) if room_id in pending else None
                if decided is not None:
                    await self._record(CallFacts.of(call), decided)
                    finished += 1
                    continue
                verdict = self._verdict(call, now, steady)
                if verdict is not None and await self.end_call(room_id, verdict[0],
                                                               at=verdict[1]):
                    finished += 1
            except Exception:
                log.exception("sweeping call %s failed", room_id)
        return finished

    def _verdict(self, call: Call, now: float, steady: bool
                 ) -> tuple[CallEndReason, float | None] | None:
        """How the sweeper ends `call`, and when (None: now); None to leave it running."""
        alive = (call.alive_at or call.started_at).timestamp()
        overdue = now > call.ends_at.timestamp() + self.rules.reconnect_grace
        if call.node_id == self.node_id:
            if not self.placement.hosts(str(call.room_id)):
                return CallEndReason.NODE_LOST, alive  # this node restarted: the room is gone
            return (CallEndReason.COMPLETED, None) if overdue else None
        if steady and now - alive > DEAD_AFTER:
            return CallEndReason.NODE_LOST, alive
        return (CallEndReason.COMPLETED, None) if overdue else None

    async def _decided(self, room_id: str) -> CallEnd | None:
        if room_id in self._pending:
            return self._pending[room_id][1]
        raw = await self._best_effort(self.live.get(f"call:ended:{room_id}"), "end record")
        return None if raw is None else CallEnd.from_json(raw)

    async def end_hosted(self, reason: CallEndReason) -> int:
        """End every call whose room this node hosts (a graceful shutdown): now, as `reason`."""
        ended = 0
        for room_id in self.placement.room_ids():
            try:
                ended += await self.end_call(room_id, reason)
            except Exception:
                log.exception("ending call %s at shutdown failed", room_id)
        return ended

    async def restore_live(self) -> int:
        """Live state came back empty (a Redis restart): put back what it must hold for the
        calls this node hosts, from the database and the SFU's rooms: each participant's
        call key, the room's SFU URL and the call's facts. Returns how many calls."""
        restored = 0
        for room_id in self.placement.room_ids():
            call = await self.store.calls.get(RoomId(room_id))
            if call is None or call.ended_at is not None:
                continue
            ttl = max(1.0, call.ends_at.timestamp() - self.clock.time()) + ROOM_TTL
            for user in (call.caller_id, call.callee_id):
                await self.live.claim(call_key(user), room_id, ttl)
            await self.live.set(f"room:sfu:{room_id}", self.placement.url_of(room_id), ttl=ttl)
            await self.live.set(f"call:info:{room_id}", CallFacts.of(call).to_json(), ttl=ttl)
            restored += 1
        return restored

    async def pending_invites(self, user_id: str) -> dict[str, Any]:
        incoming = []
        for invite_id in await self.live.set_members(f"invite:to:{user_id}"):
            raw = await self.live.get(f"invite:{invite_id}")
            if raw is not None:
                incoming.append(Invite.from_json(raw).wire())
        outgoing = None
        mine = await self.live.get(f"invite:caller:{user_id}")
        if mine is not None:
            raw = await self.live.get(f"invite:{mine}")
            if raw is not None:
                outgoing = Invite.from_json(raw).wire()
        return {"incoming": incoming, "outgoing": outgoing}
