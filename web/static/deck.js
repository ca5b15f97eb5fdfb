// Call-length choices, the deck of people online, and invites both ways.

import { api, seconds } from "./api.js";
import {
  $, show, hide, h, showError, clearError, notify, openDialog, closeDialog, formatDuration,
  initials
} from "./ui.js";
import { failed, tick } from "./app.js";
import { ROUND_SECONDS, app, focusHeading } from "./state.js";

// ---------------------------------------------------------------- config and deck

export async function loadConfig(attempt = 0) {
  try {
    app.config = await api.config();
    buildDurations(app.config);
  } catch {
    buildDurations(null);
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

export function scheduleDeckRefresh() {
  clearTimeout(app.deckRefreshSoon);
  app.deckRefreshSoon = setTimeout(refreshDeck, 300);
}

export async function refreshDeck() {
  if (!app.me || app.deckLoading) return;
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

export function deckItem(person) {
  const li = h("li", { class: "person", dataset: { userId: person.id } },
    avatarFor(person),
    h("div", { class: "person-info" },
      h("span", { class: "person-name" }, person.name),
      h("span", { class: "person-gender" }, GENDERS[person.gender] ?? "")),
    h("button", {
      type: "button", class: "invite-button", "aria-label": `Invite ${person.name} to a call`,
      onclick: () => invite(person.id),
    }, "Invite"));
  li.dataset.selfie = stripQuery(person.selfieUrl);
  return li;
}

export function updateDeckItem(li, person) {
  li.querySelector(".person-name").textContent = person.name;
  li.querySelector(".person-gender").textContent = GENDERS[person.gender] ?? "";
  li.querySelector(".invite-button").setAttribute("aria-label", `Invite ${person.name} to a call`);
  // Signed URLs change on every listing: only reload the image when the picture changed.
  if (li.dataset.selfie !== stripQuery(person.selfieUrl)) {
    li.querySelector(".avatar").replaceWith(avatarFor(person));
    li.dataset.selfie = stripQuery(person.selfieUrl);
  }
}

export function stripQuery(url) {
  return url ? url.split("?")[0] : "";
}

export function updateInviteButtons() {
  for (const button of document.querySelectorAll("#deck .invite-button")) {
    button.disabled = !!app.outgoing || !!app.call;
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
  const dialog = $("incoming-invite");
  const current = app.call ? null : app.incoming[0];
  if (!current) {
    if (!dialog.hidden) closeDialog(dialog);
    return;
  }
  const changed = dialog.dataset.inviteId !== current.inviteId;
  dialog.dataset.inviteId = current.inviteId;
  $("incoming-name").textContent = current.from.name;
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

export async function acceptInvite() {
  const current = app.incoming[0];
  if (!current) return;
  $("accept-invite").disabled = true;
  $("decline-invite").disabled = true;
  app.media.acquireMedia();  // the camera starts while the server sets the call up
  try {
    await app.signaling.request("call:accept", { inviteId: current.inviteId });
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

export async function declineInvite() {
  const current = app.incoming[0];
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
