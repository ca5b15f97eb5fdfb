// The call screen: start, resume, end, chat, mic/camera toggles and media messages.

import { humanError, seconds } from "./api.js";
import { $, show, hide, h, clearNotice, closeDialog, formatDuration } from "./ui.js";
import { failed, tick } from "./app.js";
import { refreshDeck, updateInviteButtons, setOutgoing, renderIncoming } from "./deck.js";
import { app, showScreen, focusHeading } from "./state.js";

// Where the chat sits beside the video (style.css, same query); elsewhere it is a drawer.
const CHAT_BESIDE = window.matchMedia("(min-width: 900px) and (min-height: 560px)");
// How long a media `closed` (room_closed, node_shutdown) waits for the server's call:ended
// before asking the server for the truth with a fresh state frame.
const CLOSED_CHECK_MS = 2_000;

// ---------------------------------------------------------------- the call

/** Show the call of call:start data (or of a state frame: `fromState`, after a reload or a
 * reconnect). */
export function startCall(info, fromState = false) {
  if (app.call && app.call.roomId === info.roomId) {
    // Resume (after a reconnect): same room, fresh SFU token.
    app.call.endsAt = seconds(info.endsAt);
    app.call.partner = info.partner || app.call.partner;
    if (info.partnerMedia) app.call.partnerSending = info.partnerMedia;
    if ("recorded" in info) app.call.recorded = !!info.recorded;
    renderRecorded();
    showScreen("call");
    if (app.media.isHealthy(info.roomId)) app.media.updateInfo(info);
    else app.media.join(info);
    for (const m of info.messages || []) onChat(m);  // already-seen ids are skipped
    // Live state may have been lost with the server: say again what we send.
    if (!app.micOn || !app.cameraOn) sendMediaState();
    renderPartner();
    renderCallStatus();
    return;
  }
  if (app.call) app.media.close();
  setOutgoing(null);
  app.incoming = [];
  renderIncoming();
  hide($("call-ended"));
  clearNotice();
  app.call = { roomId: info.roomId, partner: info.partner || { id: "", name: "" },
    endsAt: seconds(info.endsAt), leaving: false, seen: new Set(),
    media: "connecting", // our own media: connecting, connected, unstable, reconnecting, replaced
    partnerPhase: null, // the partner's media as signaling and the SFU saw it: connected, failed, left
    partnerTracks: null, // {audio, video}: what the partner's offer sends (no camera: video false)
    partnerSending: info.partnerMedia || null, // {audio, video}: mic and camera on or off
    recorded: !!info.recorded, // both agreed: the call's media is being recorded
    unread: 0, closedTimer: null };
  $("call-partner").textContent = app.call.partner.name || "someone";
  $("chat-partner").textContent = app.call.partner.name || "your partner";
  $("chat-log").replaceChildren();
  show($("chat-empty"));
  $("chat-input").value = "";
  setChatOpen(false);
  hide($("remote-play"));
  renderRecorded();
  renderPartner();
  renderCallStatus();
  app.micOn = true;
  app.cameraOn = true;
  updateToggles();
  showScreen("call");
  closeDialog($("history-view"));
  tick();
  focusHeading("call-title");
  app.media.acquireMedia().then(() => {
    updateToggles();
    // After a reload the server may still hold a mute from before it: say how it is now.
    if (fromState) sendMediaState();
  });
  app.media.join(info);
  for (const m of info.messages || []) onChat(m);  // the chat so far, after a page reload
  app.call.unread = 0;  // seen before the reload
  renderUnread();
}

export const END_REASONS = {
  completed: () => "Time's up! The call is over.",
  left: (call, name) => (call.leaving ? "You ended the call." : `${name} ended the call.`),
  disconnected: (call, name) =>
    `The connection was lost and didn't come back in time (${name} or you went offline).`,
  failed: () => "The call could not be connected.",
  node_lost: () => "The media server hosting the call went away.",
  missed: () => "The call ended while you were offline.",
};

export function endCall(data) {
  const call = app.call;
  if (!call || (data.roomId && data.roomId !== call.roomId)) return;
  clearTimeout(call.closedTimer);
  app.call = null;
  renderRecorded();
  $("call").classList.remove("reconnecting", "chat-open");
  app.media.close();
  const name = call.partner.name || "Your partner";
  const reason = END_REASONS[data.reason];
  let text = reason ? reason(call, name) : `The call ended (${data.reason}).`;
  if (typeof data.durationSeconds === "number" && data.durationSeconds > 0) {
    text += ` It lasted ${formatDuration(data.durationSeconds)}.`;
  }
  $("call-ended-reason").textContent = text;
  show($("call-ended"));
  showScreen("deck");
  updateInviteButtons();
  renderIncoming();
  $("call-ended-dismiss").focus();
  refreshDeck();
}

export function dismissCallEnded() {
  hide($("call-ended"));
  focusHeading("deck-title");
}

export async function leaveCall() {
  const call = app.call;
  if (!call) return;
  call.leaving = true;
  $("end-call").disabled = true;
  try {
    await app.signaling.request("room:leave", { roomId: call.roomId });
  } catch (err) {
    call.leaving = false;
    if (err.code === "not_found" || err.code === "failed_precondition") {
      endCall({ roomId: call.roomId, reason: "left" });
    } else {
      failed(err);
    }
  } finally {
    $("end-call").disabled = false;
  }
}

export async function sendChat(ev) {
  ev.preventDefault();
  const call = app.call;
  const input = $("chat-input");
  const text = input.value.trim();
  if (!call || !text) return;
  $("chat-send").disabled = true;
  try {
    await app.signaling.request("room:message", { roomId: call.roomId, text });
    input.value = "";
  } catch (err) {
    failed(err);
  } finally {
    $("chat-send").disabled = false;
    input.focus();
  }
}

export function onChat(data) {
  const call = app.call;
  if (!call || data.roomId !== call.roomId || call.seen.has(data.messageId)) return;
  call.seen.add(data.messageId);
  const mine = app.me && data.from === app.me.id;
  const who = mine ? "You" : call.partner.name || "Partner";
  const li = h("li", { class: mine ? "mine" : "theirs" },
    h("span", { class: "chat-from" }, `${who}: `), h("span", { class: "chat-text" }, data.text));
  const log = $("chat-log");
  log.append(li);
  hide($("chat-empty"));
  log.scrollTop = log.scrollHeight;
  if (!mine && !chatVisible()) {
    call.unread += 1;
    renderUnread();
  }
}

// ---------------------------------------------------------------- the chat drawer

export function chatVisible() {
  return CHAT_BESIDE.matches || $("call").classList.contains("chat-open");
}

export function setChatOpen(open) {
  $("call").classList.toggle("chat-open", open);
  $("chat-toggle").setAttribute("aria-expanded", String(open));
  if (open && app.call) {
    app.call.unread = 0;
    const log = $("chat-log");
    log.scrollTop = log.scrollHeight;
  }
  renderUnread();
}

export function toggleChat() {
  const open = !$("call").classList.contains("chat-open");
  setChatOpen(open);
  if (open) $("chat-input").focus();
  else $("chat-toggle").focus();
}

function renderUnread() {
  const n = app.call ? app.call.unread : 0;
  const badge = $("chat-unread");
  badge.textContent = n ? String(n) : "";
  show(badge, n > 0);
  $("chat-toggle").setAttribute("aria-label", n ? `Chat, ${n} unread` : "Chat");
}

// ---------------------------------------------------------------- status, one line for both sides

/** Our own media, from MediaCall: drives the status line with the partner's and the socket's. */
export function onOwnMedia(phase) {
  if (!app.call) return;
  app.call.media = phase;
  renderCallStatus();
}

/** The signaling socket went offline or came back. */
export function onSignalingStatus(state) {
  app.signalingState = state;
  renderCallStatus();
}

/** The SFU closed our media for good ("replaced", "room_closed", "node_shutdown"). Only
 * signaling knows how the call ended: until call:ended (or a state frame) says so, we are
 * reconnecting, and we ask for a fresh state frame when nothing comes. */
export function onMediaClosed(reason) {
  const call = app.call;
  if (!call) return;
  if (reason === "replaced") {
    call.media = "replaced";
    renderCallStatus();
    return;
  }
  call.media = "reconnecting";
  renderCallStatus();
  clearTimeout(call.closedTimer);
  call.closedTimer = setTimeout(() => {
    if (app.call === call && app.signaling) app.signaling.reconnectNow();
  }, CLOSED_CHECK_MS);
}

/** The partner's media as signaling saw it (call:media). */
export function onPartnerPhase(state) {
  if (!app.call) return;
  app.call.partnerPhase = state;
  renderCallStatus();
}

/** The status line: the same words on both sides for the same state. While the signaling
 * socket is away it says "Reconnecting…" only, and the timer is hidden: the server may have
 * ended the call meanwhile, and the next state frame says how. */
export function renderCallStatus() {
  const call = app.call;
  const section = $("call");
  if (!call) return;
  const name = call.partner.name || "your partner";
  const offline = app.signalingState !== "online";
  let text;
  if (offline || call.media === "reconnecting") text = "Reconnecting…";
  else if (call.media === "replaced") text = "Your call continues in another window or tab.";
  else if (call.media === "unstable") text = "Connection unstable…";
  else if (call.media !== "connected") text = "Connecting…";
  else if (call.partnerPhase === "left") text = `Waiting for ${name} to come back…`;
  else if (call.partnerPhase === "failed") text = `${capital(name)}'s connection failed.`;
  else if (call.partnerPhase !== "connected") text = `Waiting for ${name}…`;
  else text = `Connected with ${name}`;
  const reconnecting = text === "Reconnecting…";
  section.classList.toggle("reconnecting", reconnecting);
  show($("time-left-box"), !reconnecting);
  const status = $("call-status");
  if (status.textContent !== text) status.textContent = text;
  status.dataset.state = reconnecting ? "reconnecting" : call.media;
}

function capital(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** What the partner's offer sends, as the SFU saw it (no camera: video false). */
export function onPartnerMedia(detail) {
  const call = app.call;
  if (!call) return;
  call.partnerTracks = detail.left ? null : { audio: detail.audio, video: detail.video };
  if (detail.left) call.partnerPhase = "left";
  else if (call.partnerPhase !== "failed") call.partnerPhase = "connected";
  renderPartner();
  renderCallStatus();
}

/** The partner turned the microphone or camera on or off (room:media over signaling). */
export function onPartnerSending(data) {
  const call = app.call;
  if (!call || data.roomId !== call.roomId || (app.me && data.userId === app.me.id)) return;
  call.partnerSending = { audio: !!data.audio, video: !!data.video };
  renderPartner();
}

/** The "Recorded" badge over the video, for both participants of a recorded call. */
export function renderRecorded() {
  show($("recorded-mark"), !!(app.call && app.call.recorded));
}

/** The flags over the partner's video: muted, camera off or no camera at all. */
export function renderPartner() {
  const call = app.call;
  const note = $("remote-no-video");
  const muted = $("remote-muted");
  if (!call) {
    hide(note);
    hide(muted);
    return;
  }
  const name = call.partner.name || "Your partner";
  const tracks = call.partnerTracks;
  const sending = call.partnerSending || { audio: true, video: true };
  const hasVideo = !tracks || tracks.video;
  const hasAudio = !tracks || tracks.audio;
  let noVideo = null;
  if (!hasVideo) {
    noVideo = hasAudio ? `${name} has no camera: you can hear them.`
      : `${name} is sending no video or sound.`;
  } else if (!sending.video) {
    noVideo = `${name} turned their camera off.`;
  }
  note.textContent = noVideo || "";
  show(note, !!noVideo);
  note.dataset.state = !hasVideo ? "no-camera" : !sending.video ? "camera-off" : "";
  const silent = hasVideo && (!hasAudio || !sending.audio);
  muted.textContent = !hasAudio ? `${name} has no microphone` : `${name} is muted`;
  show(muted, silent);
}

/** Tell the partner whether our microphone and camera are on (a disabled track still sends
 * silence or black frames, so they could not tell). */
export function sendMediaState() {
  const call = app.call;
  if (!call || !app.signaling) return;
  // The switches only: a missing camera or microphone reaches the partner through the SFU.
  app.signaling.request("room:media", { roomId: call.roomId, audio: app.micOn,
    video: app.cameraOn }).catch(() => {
    // Offline: sent again with the resumed call.
  });
}

export function updateToggles() {
  const mic = $("toggle-mic");
  const cam = $("toggle-camera");
  const hasMic = app.media.hasTrack("audio");
  const hasCam = app.media.hasTrack("video");
  const known = app.media.mediaSettled;
  mic.disabled = known && !hasMic;
  cam.disabled = known && !hasCam;
  mic.textContent = mic.disabled ? "No mic" : app.micOn ? "Mute" : "Unmute";
  mic.setAttribute("aria-pressed", String(!app.micOn));
  cam.textContent = cam.disabled ? "No camera" : app.cameraOn ? "Camera off" : "Camera on";
  cam.setAttribute("aria-pressed", String(!app.cameraOn));
}

export function toggle(kind) {
  if (kind === "audio") app.micOn = !app.micOn;
  else app.cameraOn = !app.cameraOn;
  app.media.setEnabled(kind, kind === "audio" ? app.micOn : app.cameraOn);
  updateToggles();
  sendMediaState();
}

export function mediaErrorText(err) {
  const have = app.media.hasTrack("audio") ? "microphone only" : app.media.hasTrack("video")
    ? "camera only" : null;
  if (have) return `Part of your camera/microphone isn't available, so you're sending ${have}.`;
  const why = err && err.name === "NotAllowedError"
    ? "Camera and microphone access was refused"
    : err && (err.name === "NotFoundError" || err.name === "OverconstrainedError")
      ? "No camera or microphone was found"
      : `Your camera and microphone couldn't be used (${humanError(err)})`;
  return `${why}, so your partner can't see or hear you. You can still see and hear them.` +
    (err && err.name === "NotAllowedError" ? " Allow access in your browser's site settings." : "");
}
