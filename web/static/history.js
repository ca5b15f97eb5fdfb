// My call history.

import { api } from "./api.js";
import { $, show, hide, h, openDialog, closeDialog, formatDuration, formatDate } from "./ui.js";
import { failed } from "./app.js";
import { app } from "./state.js";

// ---------------------------------------------------------------- history

export async function toggleHistory() {
  const view = $("history-view");
  if (!view.hidden) {
    closeDialog(view);
    return;
  }
  openDialog(view, () => closeDialog(view));
  $("history").replaceChildren();
  hide($("history-empty"));
  try {
    const { calls } = await api.calls();
    renderHistory(calls || []);
  } catch (err) {
    failed(err);
  }
}

export function renderHistory(calls) {
  const myId = app.me ? app.me.id : "";
  const items = calls.map((call) => {
    const partner = call.partnerName || "Someone";
    const messages = call.messages || [];
    return h("li", { class: "history-item" },
      h("div", { class: "history-head" },
        h("strong", { class: "history-partner" }, partner),
        h("span", { class: "history-when" }, formatDate(call.startedAt)),
        h("span", { class: "history-duration" }, formatDuration(call.durationSeconds))),
      messages.length
        ? h("ul", { class: "history-messages", "aria-label": `Messages with ${partner}` },
          messages.map((m) => h("li", {},
            h("span", { class: "chat-from" }, `${m.fromId === myId ? "You" : partner}: `),
            h("span", { class: "chat-text" }, m.text))))
        : h("p", { class: "hint" }, "No messages."));
  });
  $("history").replaceChildren(...items);
  show($("history-empty"), calls.length === 0);
}
