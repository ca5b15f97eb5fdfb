// The call screen: start, resume, end, chat, mic/camera toggles and media messages.

import { humanError, seconds } from "./api.js";
import { $, show, hide, h, clearNotice, closeDialog, formatDuration } from "./ui.js";
import { failed, tick } from "./app.js";
import { refreshDeck, updateInviteButtons, setOutgoing, renderIncoming } from "./deck.js";
import { app, showScreen, focusHeading } from "./state.js";

// ---------------------------------------------------------------- the call

export function startCall(info) {
  if (app.call && app.call.roomId === info.roomId) {
    // Resume (after a reconnect): same room, fresh SFU token.
    app.call.endsAt = seconds(info.endsAt);
    app.call.partner = info.partner || app.call.partner;
    showScreen("call");
    if (app.media.isHealthy(info.roomId)) app.media.updateInfo(info);
    else app.media.join(info);
    for (const m of info.messages || []) onChat(m);  // already-seen ids are skipped
    return;
  }
  if (app.call) app.media.close();
  setOutgoing(null);
  app.incoming = [];
  renderIncoming();
  hide($("call-ended"));
  clearNotice();
  app.call = { roomId: info.roomId, partner: info.partner || { id: "", name: "" },
    endsAt: seconds(info.endsAt), leaving: false, seen: new Set() };
  $("call-partner").textContent = app.call.partner.name || "someone";
  $("chat-log").replaceChildren();
  $("chat-input").value = "";
  $("call-status").textContent = "";
  hide($("remote-play"));
  hide($("remote-no-video"));
  app.micOn = true;
  app.cameraOn = true;
  updateToggles();
  showScreen("call");
  closeDialog($("history-view"));
  tick();
  focusHeading("call-title");
  app.media.acquireMedia().then(updateToggles);
  app.media.join(info);
  for (const m of info.messages || []) onChat(m);  // the chat so far, after a page reload
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
  app.call = null;
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
  log.scrollTop = log.scrollHeight;
}

/** What the partner sends, as the SFU saw their offer: say so when there is no video. */
export function onPartnerMedia(detail) {
  const call = app.call;
  const note = $("remote-no-video");
  if (!call || detail.left || detail.video) {
    hide(note);
    return;
  }
  const name = call.partner.name || "Your partner";
  note.textContent = detail.audio ? `${name} has no camera: you can hear them.`
    : `${name} is sending no video or sound.`;
  show(note);
}

export function updateToggles() {
  const mic = $("toggle-mic");
  const cam = $("toggle-camera");
  const hasMic = app.media.hasTrack("audio");
  const hasCam = app.media.hasTrack("video");
  const known = app.media.mediaSettled;
  mic.disabled = known && !hasMic;
  cam.disabled = known && !hasCam;
  mic.textContent = mic.disabled ? "No microphone" : app.micOn ? "Mute mic" : "Unmute mic";
  mic.setAttribute("aria-pressed", String(!app.micOn));
  cam.textContent = cam.disabled ? "No camera" : app.cameraOn ? "Turn camera off" : "Turn camera on";
  cam.setAttribute("aria-pressed", String(!app.cameraOn));
}

export function toggle(kind) {
  if (kind === "audio") app.micOn = !app.micOn;
  else app.cameraOn = !app.cameraOn;
  app.media.setEnabled(kind, kind === "audio" ? app.micOn : app.cameraOn);
  updateToggles();
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
