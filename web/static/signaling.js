// The signaling WebSocket (/ws): auth frame, `state`, requests with acks, events,
// heartbeats, and reconnection with exponential backoff.

import { ApiError } from "./api.js";

const HEARTBEAT_MS = 30_000;
const BACKOFF_START_MS = 500;
const BACKOFF_CAP_MS = 10_000;
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * Events dispatched (CustomEvent, data in `detail`):
 *   "state"            the state frame after each (re)connection
 *   "status"           detail: "connecting" | "online" | "offline"
 *   "unauthenticated"  the token was refused or the session ended (no reconnect)
 *   "server-error"     an error frame without an id
 *   any server event type ("call:invite", "presence:update", ...)
 */
export class Signaling extends EventTarget {
  constructor(getToken, url = defaultUrl()) {
    super();
    this.getToken = getToken;
    this.url = url;
    this.ws = null;
    this.ready = false;
    this.stopped = true;
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.retryTimer = null;
    this.heartbeatTimer = null;
    this.onOnline = () => { if (!this.stopped && !this.ws) this.reconnectNow(); };
  }

  start() {
    if (!this.stopped) {
      this.reconnectNow();
      return;
    }
    this.stopped = false;
    this.attempt = 0;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.drop();
  }

  /** Close the current socket (if any) and connect again at once, e.g. after a token change. */
  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.drop();
    this.connect();
  }

  drop() {
    const ws = this.ws;
    this.ws = null;
    this.setReady(false);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(1000, "bye"); } catch { /* already closed */ }
    }
    this.failPending(new ApiError("unavailable", "connection closed"));
  }

  connect() {
    const token = this.getToken();
    if (!token) return;
    this.emit("status", "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", data: { token } }));
    ws.onmessage = (msg) => this.handle(msg.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setReady(false);
      this.failPending(new ApiError("unavailable", "connection lost"));
      if (ev.code === 4401) {
        this.stopped = true;
        this.emit("unauthenticated", ev.reason || "");
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.emit("status", "offline");
    const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), Math.min(delay, BACKOFF_CAP_MS));
  }

  setReady(ready) {
    this.ready = ready;
    clearInterval(this.heartbeatTimer);
    if (ready) {
      this.heartbeatTimer = setInterval(() => {
        this.request("presence:heartbeat", {}).catch((err) => {
          // No answer on an open socket: the connection is dead, start over.
          if (err.timedOut) this.reconnectNow();
        });
      }, HEARTBEAT_MS);
    }
  }

  handle(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const { type, id, data = {} } = frame;
    if (type === "state") {
      this.attempt = 0;
      this.setReady(true);
      this.emit("status", "online");
      this.emit("state", data);
      return;
    }
    if ((type === "ack" || type === "error") && id != null && this.pending.has(String(id))) {
      const p = this.pending.get(String(id));
      this.pending.delete(String(id));
      clearTimeout(p.timer);
      if (type === "ack") p.resolve(data);
      else p.reject(new ApiError(data.code || "internal", data.message || ""));
      return;
    }
    if (type === "error") {
      this.emit("server-error", new ApiError(data.code || "internal", data.message || ""));
      return;
    }
    this.emit(type, data);
  }

  /** Send a request; resolves with the ack's data, rejects with ApiError. */
  request(type, data = {}) {
    if (!this.ws || !this.ready || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ApiError("unavailable", "not connected to the server"));
    }
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        const err = new ApiError("unavailable", "the server did not answer in time");
        err.timedOut = true;
        reject(err);
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ type, id, data }));
    });
  }

  failPending(err) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
