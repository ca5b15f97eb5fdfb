// Shared client state and screen switching.

import { MediaCall, napalmsky } from "./call.js";
import { $, show } from "./ui.js";

export const DECK_REFRESH_MS = 10_000;
export const MAX_SELFIE_BYTES = 5 * 1024 * 1024;
export const ROUND_SECONDS = [30, 60, 120, 180, 300, 600, 900, 1800, 3600];

export const app = {
  me: null,
  config: null,
  signaling: null,
  media: new MediaCall($("local-video"), $("remote-video")),
  deck: new Map(), // userId -> deck entry
  deckTimer: null,
  deckRefreshSoon: null,
  deckLoading: false,
  incoming: [], // pending invites to me, oldest first
  outgoing: null, // {inviteId, expiresAt, toId, toName}
  call: null, // {roomId, partner, endsAt, leaving, seen, media, partnerPhase, partnerTracks,
  //             partnerSending, unread}: see callview.js
  signalingState: "connecting", // "connecting" | "online" | "offline"
  micOn: true,
  cameraOn: true,
  pendingSelfie: null,
  selfieStream: null,
  tokenRotating: false,
};
napalmsky.app = app;

// ---------------------------------------------------------------- screens

export function showScreen(name) {
  show($("signup-screen"), name === "signup");
  show($("deck-screen"), name === "deck");
  show($("call"), name === "call");
  // The call screen is laid out to the viewport (no page scroll): see style.css.
  document.body.classList.toggle("in-call", name === "call");
}

export function focusHeading(id) {
  const el = $(id);
  el.setAttribute("tabindex", "-1");
  el.focus({ preventScroll: false });
}
