// Small DOM helpers: elements, visibility, banners, dialogs with focus and Escape, formatting.

import { humanError } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function show(el, visible = true) {
  el.hidden = !visible;
}
export function hide(el) {
  el.hidden = true;
}

/** Build an element: h("li", {class: "x", dataset: {userId}}, child, "text"). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ---- banners ----

export function showError(err) {
  const text = typeof err === "string" ? err : humanError(err);
  $("error-text").textContent = text;
  $("error").dataset.code = (err && err.code) || "";
  show($("error"));
  if (err && typeof err !== "string") console.warn("napalmsky:", err);
}
/** Clear the banner if it shows a connectivity error (once we are back online). */
export function clearConnectionError() {
  if (["network", "unavailable"].includes($("error").dataset.code)) clearError();
}
export function clearError() {
  $("error-text").textContent = "";
  hide($("error"));
}

let noticeTimer = null;
/** A passing message (not an error); it fades after a while unless `sticky`. */
export function notify(text, { sticky = false } = {}) {
  $("notice-text").textContent = text;
  show($("notice"));
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(clearNotice, 8000);
}
export function clearNotice() {
  clearTimeout(noticeTimer);
  $("notice-text").textContent = "";
  hide($("notice"));
}

// ---- dialogs (non-modal): focus the first control, Escape closes, focus goes back ----

const openDialogs = []; // [{el, onEscape, returnTo}]

export function openDialog(el, onEscape) {
  closeDialogRecord(el, false);
  openDialogs.push({ el, onEscape, returnTo: document.activeElement });
  show(el);
  focusFirst(el);
}

export function closeDialog(el) {
  closeDialogRecord(el, true);
  hide(el);
}

function closeDialogRecord(el, restoreFocus) {
  const i = openDialogs.findIndex((d) => d.el === el);
  if (i < 0) return;
  const [record] = openDialogs.splice(i, 1);
  const focusWasInside = el.contains(document.activeElement);
  if (restoreFocus && focusWasInside && record.returnTo && record.returnTo.isConnected &&
      !record.returnTo.closest("[hidden]")) {
    record.returnTo.focus();
  }
}

export function focusFirst(container) {
  const target = container.querySelector(
    "input:not([type=hidden]):not([disabled]), select:not([disabled]), textarea:not([disabled]), " +
    "button:not([disabled]), a[href]");
  if (target) target.focus();
}

document.addEventListener("keydown", (ev) => {
  if (ev.key !== "Escape" || openDialogs.length === 0) return;
  // The dialog holding focus, else the most recently opened.
  const record = [...openDialogs].reverse().find((d) => d.el.contains(document.activeElement)) ||
    openDialogs[openDialogs.length - 1];
  ev.preventDefault();
  record.onEscape();
});

// ---- formatting ----

/** 90 → "1 min 30 s". */
export function formatDuration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const parts = [];
  if (h) parts.push(`${h} h`);
  if (m) parts.push(`${m} min`);
  if (s || parts.length === 0) parts.push(`${s} s`);
  return parts.join(" ");
}

/** 95 → "1:35". */
export function formatClock(seconds) {
  seconds = Math.max(0, Math.ceil(seconds));
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return `${m}:${s}`;
}

export function formatDate(value) {
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function initials(name) {
  return (name || "?").trim().split(/\s+/).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
}
