// Call-length choices, the deck of people online, and invites both ways.

import { api, seconds, serverNow } from "./api.js";
import {
  $, show, hide, h, showError, clearError, notify, openDialog, closeDialog, formatDuration,
  initials
} from "./ui.js";
import { failed, tick } from "./app.js";
import { ROUND_SECONDS, app, focusHeading } from "./state.js";
import { cardPicture, toggleCardIntro, stopCardIntro } from "./intro.js";

// ---------------------------------------------------------------- config and deck

export async function loadConfig(attempt = 0) {
  try {
    app.config = await api.config();
    buildDurations(app.config);
    buildRecording(app.config);
  } catch {
    buildDurations(null);
    buildRecording(null);
    setTimeout(() => loadConfig(attempt + 1), Math.min(10_000, 1000 * 2 ** attempt));
  }
}

export function buildDurations(config) {
  const select = $("invite-seconds");
  const previous = select.value;
  select.replaceChildren();
  if (!config) {
    select.append(h("option", { value: "" }, "Default length"));
    return;
  }
  const { callMinSeconds: min, callDefaultSeconds: def, callMaxSeconds: max } = config;
  const values = [...new Set([min, def, max, ...ROUND_SECONDS.filter((v) => v > min && v < max)])]
    .filter((v) => v >= min && v <= max)
    .sort((a, b) => a - b);
  for (const v of values) {
    const label = formatDuration(v) + (v === def ? " (default)" : "");
    select.append(h("option", { value: String(v), selected: v === def }, label));
  }
  if (previous && values.includes(Number(previous))) select.value = previous;
  else select.value = String(def);
}

/** Whether this service records calls (both people must agree): the consent controls are
 * shown only then. */
export function recordingEnabled() {
  return !!(app.config && app.config.recordingEnabled);
}

export function buildRecording(config) {
  const on = !!(config && config.recordingEnabled);
  show($("invite-record-field"), on);
  if (!on) $("invite-record").checked = false;
  renderIncoming();
}

export function scheduleDeckRefresh() {
  clearTimeout(app.deckRefreshSoon);
  app.deckRefreshSoon = setTimeout(refreshDeck, 300);
}

export async function refreshDeck() {
  // Not during a call: the deck is out of sight and a failure would only add noise.
  if (!app.me || app.deckLoading || app.call) return;
  app.deckLoading = true;
  try {
    const page = await api.deck();
    if (app.me) renderDeck(page.people || []);
  } catch (err) {
    failed(err);
  } finally {
    app.deckLoading = false;
  }
}

export function renderDeck(people) {
  const ul = $("deck");
  const existing = new Map([...ul.children].map((li) => [li.dataset.userId, li]));
  const focusedId = ul.contains(document.activeElement)
    ? document.activeElement.closest("li")?.dataset.userId : null;
  app.deck = new Map(people.map((p) => [p.id, p]));
  people.forEach((person, i) => {
    let li = existing.get(person.id);
    existing.delete(person.id);
    if (!li) li = deckItem(person);
    else updateDeckItem(li, person);
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
  });
  for (const li of existing.values()) li.remove();
  if (focusedId && !app.deck.has(focusedId)) $("deck-refresh").focus();
  show($("deck-empty"), people.length === 0);
  updateInviteButtons();
}

export function avatarFor(person, size = "") {
  if (person.selfieUrl) {
    return h("img", { class: `avatar ${size}`, src: person.selfieUrl, alt: "", loading: "lazy" });
  }
  return h("span", { class: `avatar avatar-initials ${size}`, "aria-hidden": "true" },
    initials(person.name));
}

export const GENDERS = { female: "Female", male: "Male", nonbinary: "Non-binary", unspecified: "" };

/** A card: the selfie, the whole name, and what can be done with this person now: invite
 * them, answer their invite (Accept/Decline), or wait for them with a countdown (Cancel). */
export function deckItem(person) {
  const li = h("li", { class: "person", dataset: { userId: person.id } },
    cardPicture(person, avatarFor),
    h("div", { class: "person-info" },
      h("span", { class: "person-name" }, person.name),
      h("span", { class: "person-gender" }, GENDERS[person.gender] ?? "")),
    h("p", { class: "person-state", "aria-live": "polite", hidden: true },
      h("span", { class: "person-state-text" }), " ",
      h("span", { class: "person-countdown countdown" })),
    h("button", { type: "button", class: "intro-play secondary", hidden: !person.videoUrl,
      onclick: () => toggleCardIntro(li, avatarFor) }, "Play intro"),
    h("div", { class: "person-actions" },
      h("button", { type: "button", class: "invite-button", onclick: () => invite(person.id) },
        "Invite"),
      h("button", { type: "button", class: "accept-button", hidden: true,
        onclick: () => acceptInvite(incomingFrom(person.id)) }, "Accept"),
      h("button", { type: "button", class: "decline-button secondary", hidden: true,
        onclick: () => declineInvite(incomingFrom(person.id)) }, "Decline"),
      h("button", { type: "button", class: "cancel-button secondary", hidden: true,
        onclick: () => cancelInvite() }, "Cancel")));
  labelCard(li, person);
  li.dataset.selfie = pictureKey(person);
  return li;
}

/** What the card's picture shows: the intro's poster, else the selfie (without signatures). */
function pictureKey(person) {
  return person.posterUrl ? `poster:${stripQuery(person.posterUrl)}` : stripQuery(person.selfieUrl);
}

function labelCard(li, person) {
  const name = person.name;
  li.querySelector(".invite-button").setAttribute("aria-label", `Invite ${name} to a call`);
  li.querySelector(".accept-button").setAttribute("aria-label", `Accept ${name}'s invite`);
  li.querySelector(".decline-button").setAttribute("aria-label", `Decline ${name}'s invite`);
  li.querySelector(".cancel-button").setAttribute("aria-label", `Cancel your invite to ${name}`);
  li.querySelector(".intro-play").setAttribute("aria-label",
    `${li.dataset.playing ? "Stop" : "Play"} ${name}'s intro video`);
}

function incomingFrom(userId) {
  return app.incoming.find((i) => i.from.id === userId);
}

export function updateDeckItem(li, person) {
  li.querySelector(".person-name").textContent = person.name;
  li.querySelector(".person-gender").textContent = GENDERS[person.gender] ?? "";
  labelCard(li, person);
  show(li.querySelector(".intro-play"), !!person.videoUrl);
  if (li.dataset.playing && !person.videoUrl) stopCardIntro(li, avatarFor);
  // Signed URLs change on every listing: only reload the image when the picture changed (and
  // never while the intro plays in its place).
  if (li.dataset.selfie !== pictureKey(person) && !li.dataset.playing) {
    li.querySelector(".avatar").replaceWith(cardPicture(person, avatarFor));
    li.dataset.selfie = pictureKey(person);
  }
}

/** Stop every card's intro (a call starts: the deck is out of sight). */
export function stopCardIntros() {
  for (const li of document.querySelectorAll("#deck li.person[data-playing]")) {
    stopCardIntro(li, avatarFor);
  }
}

export function stripQuery(url) {
  return url ? url.split("?")[0] : "";
}

/** Each card's actions for the invites as they stand: Accept/Decline on someone who invited
 * me, a countdown and Cancel on the one I invited, Invite (disabled while I wait) elsewhere. */
export function updateInviteButtons() {
  for (const li of document.querySelectorAll("#deck li.person")) {
    const userId = li.dataset.userId;
    const incoming = app.call ? null : incomingFrom(userId);
    const outgoing = !app.call && app.outgoing && app.outgoing.toId === userId ? app.outgoing
      : null;
    const state = incoming ? "incoming" : outgoing ? "outgoing" : "";
    if (state) li.dataset.invite = state;
    else delete li.dataset.invite;
    const invite = li.querySelector(".invite-button");
    show(invite, !state);
    invite.disabled = !!app.outgoing || !!app.call;
    show(li.querySelector(".accept-button"), !!incoming);
    show(li.querySelector(".decline-button"), !!incoming);
    show(li.querySelector(".cancel-button"), !!outgoing);
    show(li.querySelector(".person-state"), !!state);
    li.querySelector(".person-state-text").textContent = incoming ? "Invited you!"
      : outgoing ? "Waiting for an answer…" : "";
  }
  tickCards();
}

/** The countdowns on the cards (every tick). */
export function tickCards(now = serverNow() / 1000) {
  for (const li of document.querySelectorAll("#deck li.person[data-invite]")) {
    const userId = li.dataset.userId;
    const pending = li.dataset.invite === "incoming" ? incomingFrom(userId) : app.outgoing;
    const left = pending ? Math.max(0, Math.ceil(pending.expiresAt - now)) : 0;
    li.querySelector(".person-countdown").textContent = `${left} s`;
  }
}

// ---------------------------------------------------------------- invites

export async function invite(userId) {
  clearError();
  if (app.outgoing) {
    showError("You already have an invite waiting: cancel it first.");
    return;
  }
  const value = $("invite-seconds").value;
  const data = { to: userId };
  if (value) data.seconds = Number(value);
  if (recordingEnabled()) data.record = $("invite-record").checked;
  const person = app.deck.get(userId);
  try {
    const ack = await app.signaling.request("call:invite", data);
    if (app.call) return;
    setOutgoing({ inviteId: ack.inviteId, expiresAt: seconds(ack.expiresAt), toId: userId,
      toName: person ? person.name : "them" });
    // Start the camera while they decide: it is ready when the call starts.
    app.media.acquireMedia();
  } catch (err) {
    failed(err);
  }
}

export function setOutgoing(outgoing) {
  app.outgoing = outgoing;
  if (outgoing) {
    $("outgoing-name").textContent = outgoing.toName;
    show($("outgoing-invite"));
    tick();
    $("cancel-invite").focus();
  } else {
    const hadFocus = $("outgoing-invite").contains(document.activeElement);
    hide($("outgoing-invite"));
    if (hadFocus) focusHeading("deck-title");
  }
  updateInviteButtons();
}

export async function cancelInvite() {
  const outgoing = app.outgoing;
  if (!outgoing) return;
  try {
    await app.signaling.request("call:cancel", { inviteId: outgoing.inviteId });
    if (app.outgoing && app.outgoing.inviteId === outgoing.inviteId) {
      setOutgoing(null);
      app.media.releaseMedia();
      notify("Invite cancelled.");
    }
  } catch (err) {
    if (err.code === "not_found" || err.code === "failed_precondition") setOutgoing(null);
    failed(err);
  }
}

export function addIncoming(invite) {
  if (app.incoming.some((i) => i.inviteId === invite.inviteId)) return;
  app.incoming.push({ ...invite, expiresAt: seconds(invite.expiresAt) });
  renderIncoming();
}

export function removeIncoming(inviteId) {
  app.incoming = app.incoming.filter((i) => i.inviteId !== inviteId);
  renderIncoming();
}

export function renderIncoming() {
  updateInviteButtons();
  const dialog = $("incoming-invite");
  const current = app.call ? null : app.incoming[0];
  if (!current) {
    if (!dialog.hidden) closeDialog(dialog);
    return;
  }
  const changed = dialog.dataset.inviteId !== current.inviteId;
  dialog.dataset.inviteId = current.inviteId;
  $("incoming-name").textContent = current.from.name;
  // The caller asks to record: say so, and ask for consent (unchecked: no consent).
  const asksRecord = !!current.record && recordingEnabled();
  if (changed) $("accept-record").checked = false;
  $("incoming-record-name").textContent = current.from.name;
  show($("incoming-record"), asksRecord);
  $("incoming-length").textContent = formatDuration(current.seconds);
  const person = app.deck.get(current.from.id);
  const avatar = $("incoming-avatar");
  if (person && person.selfieUrl) {
    avatar.src = person.selfieUrl;
    show(avatar);
  } else {
    hide(avatar);
  }
  $("accept-invite").disabled = false;
  $("decline-invite").disabled = false;
  tick();
  if (dialog.hidden) openDialog(dialog, declineInvite);
  else if (changed) $("accept-invite").focus();
}

export async function acceptInvite(current = app.incoming[0]) {
  if (!current) return;
  $("accept-invite").disabled = true;
  $("decline-invite").disabled = true;
  app.media.acquireMedia();  // the camera starts while the server sets the call up
  try {
    const data = { inviteId: current.inviteId };
    // Consent comes from the dialog's checkbox, for the invite it shows (Accept on a card
    // of another invite gives none).
    const shown = $("incoming-invite").dataset.inviteId === current.inviteId &&
      !$("incoming-record").hidden;
    if (current.record && recordingEnabled()) data.record = shown && $("accept-record").checked;
    await app.signaling.request("call:accept", data);
    removeIncoming(current.inviteId);
  } catch (err) {
    app.media.releaseMedia();
    failed(err);
    if (["not_found", "failed_precondition", "invalid_argument"].includes(err.code)) {
      removeIncoming(current.inviteId);
    } else {
      renderIncoming();
    }
  }
}

export async function declineInvite(current = app.incoming[0]) {
  if (!current) return;
  removeIncoming(current.inviteId);
  try {
    await app.signaling.request("call:decline", { inviteId: current.inviteId });
  } catch (err) {
    if (err.code !== "not_found") failed(err);
  }
}

export function inviteGone(kind, data) {
  const out = app.outgoing;
  if (out && out.inviteId === data.inviteId) {
    setOutgoing(null);
    app.media.releaseMedia();
    if (kind === "call:declined") notify(`${out.toName} declined your invite.`);
    else if (kind === "call:expired") notify(`${out.toName} didn't answer in time.`);
    else notify("Invite cancelled.");
    refreshDeck();
  }
  const incoming = app.incoming.find((i) => i.inviteId === data.inviteId);
  if (incoming) {
    removeIncoming(incoming.inviteId);
    if (kind === "call:cancelled") notify(`${incoming.from.name} cancelled the invite.`);
    else if (kind === "call:expired") notify(`The invite from ${incoming.from.name} expired.`);
  }
}
