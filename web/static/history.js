// My call history, with the recordings of recorded calls.

import { api } from "./api.js";
import {
  $, show, hide, h, openDialog, closeDialog, formatDuration, formatDate, notify, showError
} from "./ui.js";
import { failed } from "./app.js";
import { app } from "./state.js";

// While a recording is still being processed, its entry asks again this often (history open).
const RECORDING_POLL_MS = 3_000;
// Each opening of the history: fetches and polls of an older one stop.
let historyRun = 0;
let observer = null;
const loaders = new WeakMap(); // history entry -> loads its recordings

// ---------------------------------------------------------------- history

export async function toggleHistory() {
  const view = $("history-view");
  historyRun += 1;
  stopObserving();
  if (!view.hidden) {
    closeDialog(view);
    return;
  }
  const run = historyRun;
  openDialog(view, () => closeDialog(view));
  $("history").replaceChildren();
  hide($("history-empty"));
  try {
    const { calls } = await api.calls();
    if (run === historyRun) renderHistory(calls || []);
  } catch (err) {
    failed(err);
  }
}

export function renderHistory(calls) {
  const myId = app.me ? app.me.id : "";
  const run = historyRun;
  stopObserving();
  const items = calls.map((call) => {
    const partner = call.partnerName || "Someone";
    const messages = call.messages || [];
    const recordings = h("div", { class: "history-recordings", hidden: true,
      dataset: { roomId: call.roomId } });
    const li = h("li", { class: "history-item", dataset: { roomId: call.roomId } },
      h("div", { class: "history-head" },
        h("strong", { class: "history-partner" }, partner),
        h("span", { class: "history-when" }, formatDate(call.startedAt)),
        h("span", { class: "history-duration" }, formatDuration(call.durationSeconds))),
      messages.length
        ? h("ul", { class: "history-messages", "aria-label": `Messages with ${partner}` },
          messages.map((m) => h("li", {},
            h("span", { class: "chat-from" }, `${m.fromId === myId ? "You" : partner}: `),
            h("span", { class: "chat-text" }, m.text))))
        : h("p", { class: "hint" }, "No messages."),
      recordings);
    loaders.set(li, () => loadRecordings(call, recordings, run));
    return li;
  });
  $("history").replaceChildren(...items);
  show($("history-empty"), calls.length === 0);
  observeEntries(items);
}

// ---------------------------------------------------------------- recordings, fetched lazily

/** Each entry's recordings are asked for when the entry comes into sight (not the whole
 * history at once). */
function observeEntries(items) {
  if (!items.length) return;
  if (typeof IntersectionObserver !== "function") {
    for (const li of items) loaders.get(li)();
    return;
  }
  observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      loaders.get(entry.target)();
    }
  });
  for (const li of items) observer.observe(li);
}

function stopObserving() {
  if (observer) observer.disconnect();
  observer = null;
}

function stillShown(box, run) {
  return run === historyRun && box.isConnected && !$("history-view").hidden &&
    box.dataset.state !== "deleted";
}

async function loadRecordings(call, box, run, attempt = 0) {
  if (!stillShown(box, run)) return;
  let list;
  try {
    list = (await api.recordings(call.roomId)).recordings || [];
  } catch (err) {
    if (err.code === "not_found") return;  // no such call (any more): nothing to show
    if (err.code === "unauthenticated") {
      failed(err);
      return;
    }
    // Passing trouble: ask again a few times while the history is open, quietly.
    if (attempt < 3) {
      setTimeout(() => loadRecordings(call, box, run, attempt + 1),
        RECORDING_POLL_MS * (attempt + 1));
    }
    return;
  }
  if (!stillShown(box, run)) return;
  renderRecordings(call, box, list);
  if (list.some((r) => r.status === "recording")) {
    setTimeout(() => loadRecordings(call, box, run), RECORDING_POLL_MS);
  }
}

const RECORDING_STATUS = {
  recording: "being processed…",
  failed: "could not be saved.",
};

function renderRecordings(call, box, list) {
  if (!list.length) {
    box.replaceChildren();
    hide(box);
    return;
  }
  const myId = app.me ? app.me.id : "";
  const partner = call.partnerName || "Someone";
  const items = list.map((rec) => {
    const who = rec.userId === myId ? "Your video" : `${partner}'s video`;
    if (rec.status === "ready" && rec.url) {
      const details = [
        typeof rec.durationSeconds === "number" ? formatDuration(rec.durationSeconds) : "",
        typeof rec.sizeBytes === "number" ? formatSize(rec.sizeBytes) : "",
        rec.container ? rec.container.toUpperCase() : "",
      ].filter(Boolean).join(", ");
      return h("li", { class: "recording", dataset: { status: rec.status, userId: rec.userId } },
        h("a", { class: "recording-link", href: rec.url, target: "_blank", rel: "noopener",
          "aria-label": `Open ${who.toLowerCase()} of the call with ${partner}` +
            (details ? ` (${details})` : "") }, `▶ ${who}`),
        details ? h("span", { class: "recording-status" }, ` (${details})`) : null);
    }
    return h("li", { class: "recording", dataset: { status: rec.status, userId: rec.userId } },
      `${who}: `,
      h("span", { class: "recording-status" }, RECORDING_STATUS[rec.status] || rec.status));
  });
  const remove = h("button", { type: "button", class: "delete-recording danger",
    "aria-label": `Delete the recording of your call with ${partner}`,
    onclick: () => deleteRecordings(call, box, remove) }, "Delete recording");
  box.replaceChildren(
    h("h3", {}, "Recording"),
    h("ul", { class: "recording-list", "aria-label": `Recording of your call with ${partner}` },
      items),
    h("div", { class: "row" }, remove));
  show(box);
}

async function deleteRecordings(call, box, button) {
  button.disabled = true;
  try {
    await api.deleteRecordings(call.roomId);
  } catch (err) {
    if (err.code !== "not_found") {  // already gone: as good as deleted
      button.disabled = false;
      if (err.code === "unauthenticated") failed(err);
      else showError(err);
      return;
    }
  }
  const hadFocus = box.contains(document.activeElement);
  box.dataset.state = "deleted";
  box.replaceChildren();
  hide(box);
  notify("Recording deleted.");
  if (hadFocus) {
    const li = box.closest("li");
    li.setAttribute("tabindex", "-1");
    li.focus();
  }
}

function formatSize(bytes) {
  if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
