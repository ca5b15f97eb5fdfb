// Napalm Sky web client: session, signaling events, timers and wiring; the entry point.

import { api, getToken, setToken, serverNow, seconds } from "./api.js";
import { Signaling } from "./signaling.js";
import { napalmsky } from "./call.js";
import {
  $, show, hide, showError, clearError, clearConnectionError, notify, clearNotice, closeDialog,
  formatClock
} from "./ui.js";
import {
  onSignup, onLogin, setPendingSelfie, onSelfieFile, startSelfieCamera, stopSelfieCamera,
  captureSelfie, openUpgrade, closeUpgrade, onUpgrade
} from "./account.js";
import {
  startCall, endCall, dismissCallEnded, leaveCall, sendChat, onChat, toggle, mediaErrorText,
  onPartnerMedia, onPartnerSending, onPartnerPhase, onOwnMedia, onMediaClosed,
  onSignalingStatus, toggleChat,
} from "./callview.js";
import {
  loadConfig, scheduleDeckRefresh, refreshDeck, invite, setOutgoing, cancelInvite, addIncoming,
  removeIncoming, renderIncoming, acceptInvite, declineInvite, inviteGone, tickCards,
  stopCardIntros
} from "./deck.js";
import { toggleHistory } from "./history.js";
import { wireIntro, loadIntro, resetIntro } from "./intro.js";
import { DECK_REFRESH_MS, app, showScreen, focusHeading } from "./state.js";

// ---------------------------------------------------------------- session

export async function boot() {
  wireEvents();
  loadConfig();
  if (!getToken()) {
    showScreen("signup");
    return;
  }
  await resumeSession();
}

export async function resumeSession(attempt = 0) {
  try {
    enter(await api.me());
  } catch (err) {
    if (err.code === "unauthenticated") {
      setToken(null);
      showScreen("signup");
      return;
    }
    showError(err);
    showScreen("signup");
    // The server may be restarting: keep trying quietly with the stored token.
    setTimeout(() => { if (!app.me && getToken()) resumeSession(attempt + 1); },
      Math.min(10_000, 1000 * 2 ** attempt));
  }
}

export function enter(user) {
  const first = !app.me;
  setMe(user);
  clearError();
  showScreen(app.call ? "call" : "deck");
  show($("account-nav"));
  if (!app.signaling) {
    app.signaling = new Signaling(getToken);
    napalmsky.signaling = app.signaling;
    wireSignaling(app.signaling);
  }
  app.signaling.start();
  clearInterval(app.deckTimer);
  app.deckTimer = setInterval(refreshDeck, DECK_REFRESH_MS);
  refreshDeck();
  if (first) {
    loadIntro();
    focusHeading("deck-title");
  }
}

export function setMe(user) {
  app.me = user;
  const me = $("me");
  me.dataset.userId = user.id;
  $("me-name").textContent = user.name;
  const avatar = $("me-avatar");
  if (user.selfieUrl) {
    avatar.src = user.selfieUrl;
    show(avatar);
  } else {
    hide(avatar);
  }
  show($("upgrade-button"), user.accountType === "guest");
}

/** Forget everything about the session on this page. */
export function signOutLocally() {
  if (app.signaling) app.signaling.stop();
  app.media.close();
  clearInterval(app.deckTimer);
  clearTimeout(app.deckRefreshSoon);
  setToken(null);
  app.me = null;
  app.call = null;
  app.outgoing = null;
  app.incoming = [];
  app.deck.clear();
  $("deck").replaceChildren();
  resetIntro();
  $("chat-log").replaceChildren();
  $("me").dataset.userId = "";
  $("me-name").textContent = "";
  hide($("account-nav"));
  hide($("call-ended"));
  hide($("outgoing-invite"));
  hide($("recorded-mark"));
  for (const id of ["incoming-invite", "history-view", "upgrade-dialog"]) closeDialog($(id));
  $("conn-status").textContent = "";
  delete $("conn-status").dataset.state;
  clearNotice();
  showScreen("signup");
}

export function sessionEnded() {
  if (app.tokenRotating) return;
  signOutLocally();
  showError("Your session has ended. Please sign in again.");
  $("signup-name").focus();
}

/** Any REST failure: a refused token ends the session, the rest is shown. */
export function failed(err) {
  if (err && err.code === "unauthenticated" && app.me) sessionEnded();
  // During a call the status line says "Reconnecting…": no second, contradicting banner.
  else if (!(app.call && err && ["network", "unavailable"].includes(err.code))) showError(err);
}

export async function logout() {
  const call = app.call;
  if (call && app.signaling) {
    try { await app.signaling.request("room:leave", { roomId: call.roomId }); } catch { /* gone */ }
  }
  if (app.signaling) app.signaling.stop();
  try { await api.logout(); } catch { /* the token is dropped either way */ }
  signOutLocally();
  clearError();
  notify("You're logged out.");
  $("signup-name").focus();
}

// ---------------------------------------------------------------- signaling events

export function onState(state) {
  if (state.user && app.me && state.user.id !== app.me.id) return;
  const invites = state.invites || {};
  const now = serverNow() / 1000;
  app.incoming = (invites.incoming || []).map((i) => ({ ...i, expiresAt: seconds(i.expiresAt) }))
    .filter((i) => i.expiresAt > now);
  const out = invites.outgoing;
  if (out && !state.call) {
    const person = app.deck.get(out.to);
    const name = app.outgoing && app.outgoing.inviteId === out.inviteId ? app.outgoing.toName
      : person ? person.name : "them";
    if (!app.outgoing || app.outgoing.inviteId !== out.inviteId) {
      setOutgoing({ inviteId: out.inviteId, expiresAt: seconds(out.expiresAt), toId: out.to,
        toName: name });
    }
  } else if (app.outgoing) {
    setOutgoing(null);
  }
  if (state.call) startCall(state.call, true);
  else if (app.call) {
    // The call ended while this tab was away: say how, when the server knows (lastCall).
    const last = state.lastCall;
    endCall(last && last.roomId === app.call.roomId ? last
      : { roomId: app.call.roomId, reason: "missed" });
  }
  renderIncoming();
  refreshDeck();
}

export function onMediaState(data) {
  const call = app.call;
  if (!call || data.roomId !== call.roomId || (app.me && data.userId === app.me.id)) return;
  onPartnerPhase(data.state);
}

export function wireSignaling(sig) {
  sig.addEventListener("state", (e) => onState(e.detail));
  sig.addEventListener("status", (e) => {
    $("conn-status").textContent = { connecting: "Connecting…", online: "Online",
      offline: "Offline: reconnecting…" }[e.detail] || "";
    $("conn-status").dataset.state = e.detail;
    if (e.detail === "online") clearConnectionError();
    onSignalingStatus(e.detail);
  });
  sig.addEventListener("unauthenticated", sessionEnded);
  sig.addEventListener("server-error", (e) => {
    if (e.detail.code !== "unauthenticated") showError(e.detail);
  });
  sig.addEventListener("presence:update", (e) => {
    if (!app.me || e.detail.userId !== app.me.id) scheduleDeckRefresh();
  });
  sig.addEventListener("call:invite", (e) => addIncoming(e.detail));
  for (const kind of ["call:declined", "call:cancelled", "call:expired"]) {
    sig.addEventListener(kind, (e) => inviteGone(kind, e.detail));
  }
  sig.addEventListener("call:start", (e) => startCall(e.detail));
  sig.addEventListener("call:media", (e) => onMediaState(e.detail));
  sig.addEventListener("room:message", (e) => onChat(e.detail));
  sig.addEventListener("room:media", (e) => onPartnerSending(e.detail));
  sig.addEventListener("call:ended", (e) => endCall(e.detail));
}

export function wireMedia(media) {
  media.addEventListener("media-error", (e) => showError(mediaErrorText(e.detail)));
  media.addEventListener("phase", (e) => onOwnMedia(e.detail));
  media.addEventListener("need-token", () => {
    // A fresh join token comes with the state frame of a new signaling connection.
    if (app.call && app.signaling) app.signaling.reconnectNow();
  });
  media.addEventListener("error", (e) => {
    // The room is not on the media server (it restarted, or the call ended): signaling says
    // how the call stands; until then the call screen says "Reconnecting…".
    if (app.call && e.detail.code === "not_found") onMediaClosed("not_found");
    else showError(e.detail);
  });
  media.addEventListener("closed", (e) => onMediaClosed(e.detail));
  media.addEventListener("autoplay-blocked", () => show($("remote-play")));
  media.addEventListener("partner", (e) => onPartnerMedia(e.detail));
}

// ---------------------------------------------------------------- timers

export function tick() {
  const now = serverNow() / 1000;
  if (app.call) {
    stopCardIntros();  // no intro goes on playing behind the call
    const left = app.call.endsAt - now;
    $("time-left").textContent = formatClock(left);
    $("time-left").classList.toggle("ending", left <= 10);
  }
  const current = app.incoming[0];
  if (current) {
    const left = Math.max(0, Math.ceil(current.expiresAt - now));
    $("invite-countdown").textContent = String(left);
    // The server's call:expired normally arrives first; this is the safety net.
    if (current.expiresAt - now < -3) removeIncoming(current.inviteId);
  }
  if (app.outgoing) {
    const left = Math.max(0, Math.ceil(app.outgoing.expiresAt - now));
    $("outgoing-countdown").textContent = `(${left} s)`;
  }
  tickCards(now);
}

// ---------------------------------------------------------------- wiring

export function wireEvents() {
  $("signup-form").addEventListener("submit", onSignup);
  $("login-form").addEventListener("submit", onLogin);
  $("signup-selfie").addEventListener("change", onSelfieFile);
  $("selfie-camera").addEventListener("click", startSelfieCamera);
  $("selfie-capture").addEventListener("click", captureSelfie);
  $("selfie-cancel").addEventListener("click", () => { stopSelfieCamera(); $("selfie-camera").focus(); });
  $("selfie-clear").addEventListener("click", () => {
    $("signup-selfie").value = "";
    setPendingSelfie(null);
    $("signup-selfie").focus();
  });
  $("logout").addEventListener("click", logout);
  $("history-button").addEventListener("click", toggleHistory);
  $("history-close").addEventListener("click", () => closeDialog($("history-view")));
  $("upgrade-button").addEventListener("click", openUpgrade);
  $("upgrade-cancel").addEventListener("click", closeUpgrade);
  $("upgrade-form").addEventListener("submit", onUpgrade);
  $("deck-refresh").addEventListener("click", refreshDeck);
  $("cancel-invite").addEventListener("click", cancelInvite);
  $("accept-invite").addEventListener("click", () => acceptInvite());
  $("decline-invite").addEventListener("click", () => declineInvite());
  $("call-ended-dismiss").addEventListener("click", dismissCallEnded);
  $("end-call").addEventListener("click", leaveCall);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-toggle").addEventListener("click", toggleChat);
  $("chat-close").addEventListener("click", toggleChat);
  document.addEventListener("keydown", (ev) => {  // Escape closes the chat drawer
    if (ev.key !== "Escape" || ev.defaultPrevented) return;
    if (!$("call").hidden && $("call").classList.contains("chat-open")) {
      ev.preventDefault();
      toggleChat();
    }
  });
  $("toggle-mic").addEventListener("click", () => toggle("audio"));
  $("toggle-camera").addEventListener("click", () => toggle("video"));
  $("remote-play").addEventListener("click", () => {
    $("remote-video").play().catch(() => {});
    hide($("remote-play"));
  });
  $("error-dismiss").addEventListener("click", clearError);
  $("notice-dismiss").addEventListener("click", clearNotice);
  wireIntro();
  wireMedia(app.media);
  setInterval(tick, 250);
}

boot();
