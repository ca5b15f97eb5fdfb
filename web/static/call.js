// Media for one call: camera/microphone, the SFU join socket and the RTCPeerConnection.

import { ApiError } from "./api.js";

const JOIN_TIMEOUT_MS = 10_000;
const MAX_RETRIES = 3;
// An ICE restart (new ufrag/pwd, RFC 8445 section 9) when the connection has been disconnected
// this long or failed; a fresh join only when restarts do not bring it back.
const DISCONNECTED_RESTART_MS = 3_000;
const RESTART_TIMEOUT_MS = 8_000;
const MAX_ICE_RESTARTS = 2;
// SFU `closed` reasons worth a fresh attempt with the same token.
const RETRYABLE = new Set(["ice_failed", "dtls_failed", "connect_timeout"]);

export const napalmsky = (window.napalmsky = window.napalmsky || { pc: null, marks: {} });

/** Record when a step of the call's set-up happened (performance.now(), ms): for the
 * time-to-first-frame benchmark and for debugging a slow start. */
function mark(name) {
  if (!(name in napalmsky.marks)) napalmsky.marks[name] = performance.now();
}

/**
 * Dispatches (CustomEvent, `detail`):
 *   "media-error"  detail: the getUserMedia error (the call goes on receive-only)
 *   "phase"        detail: "connecting" | "connected" | "unstable" | "reconnecting": where our
 *                  media stands (the call screen words it, with the partner's and signaling's)
 *   "connected"    the peer connection is up
 *   "closed"       detail: an SFU `closed` reason we do not retry ("replaced", "room_closed", ...)
 *   "need-token"   the join token was refused: ask signaling for a fresh one
 *   "error"        detail: ApiError from the SFU
 *   "autoplay-blocked" the remote video needs a click to play
 *   "partner"      detail: {audio, video, left}: what the partner sends (no camera: video false)
 */
export class MediaCall extends EventTarget {
  constructor(localVideo, remoteVideo) {
    super();
    this.localVideo = localVideo;
    this.remoteVideo = remoteVideo;
    this.localStream = null;
    this.mediaPromise = null;
    this.mediaSettled = false; // getUserMedia has answered (with or without a stream)
    this.ws = null;
    this.pc = null;
    this.info = null;
    this.retries = 0;
    this.retryTimer = null;
    this.closedForGood = false;
    this.generation = 0;
    this.iceRestarts = 0;
    this.restartTimer = null;
    this.restarting = false;
    this.hadConnection = false; // once connected, later joins are reconnections
  }

  /** Ask for camera and microphone once per call; falls back to what is available. Called
   * early (on an invite sent or accepted) so the camera is ready when the call starts. */
  acquireMedia() {
    if (!this.mediaPromise) {
      this.mediaSettled = false;
      const promise = this.getMedia().then((stream) => {
        if (!stream) return null;
        if (this.mediaPromise !== promise) {  // released or closed while it started
          stream.getTracks().forEach((t) => t.stop());
          return null;
        }
        this.localStream = stream;
        this.localVideo.srcObject = stream;
        this.localVideo.muted = true;
        this.localVideo.play().catch(() => {});
        return stream;
      }).finally(() => { if (this.mediaPromise === promise) this.mediaSettled = true; });
      this.mediaPromise = promise;
    }
    return this.mediaPromise;
  }

  /** Stop a camera started for a call that did not happen (no effect during a call). */
  releaseMedia() {
    if (this.info) return;
    this.mediaPromise = null;
    this.mediaSettled = false;
    if (this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    this.localStream = null;
    this.localVideo.srcObject = null;
  }

  async getMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const err = new Error("This browser cannot use a camera here (a secure https page is needed).");
      err.name = "NotSupportedError";
      this.emit("media-error", err);
      return null;
    }
    let firstError = null;
    for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        if (firstError) this.emit("media-error", firstError);
        return stream;
      } catch (err) {
        firstError = firstError || err;
        // Refused: asking again for less will be refused too.
        if (err.name === "NotAllowedError" || err.name === "SecurityError") break;
      }
    }
    this.emit("media-error", firstError);
    return null;
  }

  hasTrack(kind) {
    return !!this.localStream && this.localStream.getTracks().some((t) => t.kind === kind);
  }

  setEnabled(kind, enabled) {
    if (!this.localStream) return;
    for (const track of this.localStream.getTracks()) {
      if (track.kind === kind) track.enabled = enabled;
    }
  }

  /** True while the SFU socket is open and the peer connection is up. */
  isHealthy(roomId) {
    return !!this.info && this.info.roomId === roomId && !!this.ws &&
      this.ws.readyState === WebSocket.OPEN && !!this.pc &&
      ["connected", "connecting", "new"].includes(this.pc.connectionState);
  }

  /** Keep fresh call data (a newer join token) for the next rejoin without dropping media. */
  updateInfo(info) {
    this.info = info;
  }

  /** Join (or rejoin) the room described by call:start data. */
  async join(info) {
    this.info = info;
    this.closedForGood = false;
    clearTimeout(this.retryTimer);
    this.closeTransport();
    const generation = ++this.generation;
    const stale = () => generation !== this.generation;
    napalmsky.marks = { join: performance.now() };
    this.emit("phase", this.hadConnection ? "reconnecting" : "connecting");
    try {
      // The socket opens while the camera starts; the offer follows `join` at once (the server
      // handles them in order), without waiting for our candidates: the SFU learns our address
      // from our connectivity checks (peer-reflexive, RFC 8445 section 7.3.1.3).
      const socket = this.openSocket(info, stale);
      const stream = await this.acquireMedia();
      mark("media");
      if (stale()) return;
      // The ICE servers of our region from `call:start` (TURN with a short-lived credential).
      // `?relay=1` in the page's address sends everything through TURN: for support ("does
      // the relay work from here?") and the relay tests.
      const relayOnly = new URLSearchParams(location.search).get("relay") === "1";
      const pc = new RTCPeerConnection({
        iceServers: info.iceServers || [],
        iceTransportPolicy: relayOnly ? "relay" : "all",
      });
      this.pc = pc;
      napalmsky.pc = pc;
      this.iceRestarts = 0;
      const remote = new MediaStream();
      this.remoteVideo.srcObject = remote;
      pc.ontrack = (ev) => {
        for (const old of remote.getTracks()) {
          if (old.kind === ev.track.kind) remote.removeTrack(old);
        }
        remote.addTrack(ev.track);
        this.playRemote();
      };
      if (this.remoteVideo.requestVideoFrameCallback) {
        this.remoteVideo.requestVideoFrameCallback(() => mark("firstFrame"));
      }
      pc.onconnectionstatechange = () => this.onConnectionState(pc, stale);
      for (const kind of ["audio", "video"]) {
        // Without a camera (or microphone) we only receive that kind: the offer says so, and
        // the SFU tells the partner there is nothing to show.
        const track = stream && stream.getTracks().find((t) => t.kind === kind);
        pc.addTransceiver(track || kind, {
          direction: track ? "sendrecv" : "recvonly",
          streams: stream ? [stream] : [],
        });
      }
      await pc.setLocalDescription(await pc.createOffer());
      const ws = await socket.opened;
      if (stale()) return;
      ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
      mark("offer");
      await socket.joined;
      if (stale()) return;
    } catch (err) {
      if (stale()) return;
      if (err instanceof ApiError && err.code === "unauthenticated") {
        this.closeTransport();
        this.emit("need-token");
        return;
      }
      if (err instanceof ApiError && ["permission_denied", "not_found"].includes(err.code)) {
        this.closeTransport();
        this.emit("error", err);
        return;
      }
      this.lost(err && err.message ? err.message : "join failed");
    }
  }

  onConnectionState(pc, stale) {
    if (stale()) return;
    const state = pc.connectionState;
    if (state === "connected") {
      mark("connected");
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
      this.restarting = false;
      this.retries = 0;
      this.hadConnection = true;
      this.emit("phase", "connected");
      this.emit("connected");
    } else if (state === "disconnected") {
      // A network change (Wi-Fi to mobile) shows here first: give it a moment, then restart ICE.
      this.emit("phase", "unstable");
      if (!this.restartTimer) {
        this.restartTimer = setTimeout(() => {
          this.restartTimer = null;
          if (!stale() && pc.connectionState !== "connected") this.restartIce(pc, stale);
        }, DISCONNECTED_RESTART_MS);
      }
    } else if (state === "failed") {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
      this.restartIce(pc, stale);
    }
  }

  /** ICE restart on the same socket: new credentials, same DTLS session and tracks. Falls back
   * to a fresh join when the socket is gone or restarts do not bring the connection back. */
  async restartIce(pc, stale) {
    const ws = this.ws;
    if (this.restarting || stale()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.iceRestarts >= MAX_ICE_RESTARTS) {
      this.lost("ice_failed");
      return;
    }
    this.restarting = true;
    this.iceRestarts += 1;
    this.emit("phase", "reconnecting");
    try {
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer());
      if (stale()) return;
      ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
    } catch (err) {
      this.restarting = false;
      if (!stale()) this.lost("ice restart failed");
      return;
    }
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.restarting = false;
      if (stale() || pc.connectionState === "connected") return;
      this.restartIce(pc, stale);
    }, RESTART_TIMEOUT_MS);
  }

  /** Open the SFU socket and send `join`. Returns {opened, joined}: the socket once open (the
   * offer may follow `join` at once) and once the server accepted the token. */
  openSocket(info, stale) {
    let opened;
    const openedPromise = new Promise((resolve) => { opened = resolve; });
    const joinedPromise = new Promise((resolve, reject) => {
      let joined = false;
      const ws = new WebSocket(info.sfu.url);
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error("the media server did not answer")),
        JOIN_TIMEOUT_MS);
      ws.onopen = () => {
        mark("socket");
        ws.send(JSON.stringify({ type: "join", token: info.sfu.token, roomId: info.roomId }));
        opened(ws);
      };
      ws.onmessage = async (msg) => {
        if (stale()) return;
        let m;
        try {
          m = JSON.parse(msg.data);
        } catch {
          return;
        }
        if (m.type === "joined") {
          joined = true;
          mark("joined");
          clearTimeout(timer);
          resolve(ws);
        } else if (m.type === "answer") {
          mark("answer");
          try {
            if (this.pc) await this.pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
          } catch (err) {
            this.lost("bad answer");
          }
        } else if (m.type === "partner") {
          this.emit("partner", { audio: !!m.audio, video: !!m.video, left: !!m.left });
        } else if (m.type === "error") {
          const err = new ApiError(m.code || "internal", m.message || "");
          if (!joined) {
            clearTimeout(timer);
            reject(err);
          } else {
            this.emit("error", err);
          }
        } else if (m.type === "closed") {
          this.handleClosed(m.reason || "");
        }
      };
      ws.onclose = () => {
        clearTimeout(timer);
        if (stale() || this.ws !== ws) return;
        if (!joined) {
          reject(new Error("the media connection closed"));
        } else {
          this.lost("socket closed");
        }
      };
    });
    joinedPromise.catch(() => {});
    return { opened: Promise.race([openedPromise, joinedPromise]), joined: joinedPromise };
  }

  handleClosed(reason) {
    if (RETRYABLE.has(reason)) {
      this.lost(reason);
      return;
    }
    this.generation++;
    this.closeTransport();
    this.emit("closed", reason);
  }

  /** The media dropped: try again with backoff, then ask for a fresh token. */
  lost(reason) {
    if (this.closedForGood || !this.info) return;
    this.generation++;
    this.closeTransport();
    if (this.retries >= MAX_RETRIES) {
      this.retries = 0;
      this.emit("phase", "reconnecting");
      this.emit("need-token");
      return;
    }
    const delay = 1000 * 2 ** this.retries;
    this.retries += 1;
    this.emit("phase", "reconnecting");
    console.info("napalmsky: media lost, retrying:", reason);
    this.retryTimer = setTimeout(() => {
      if (!this.closedForGood && this.info) this.join(this.info);
    }, delay);
  }

  playRemote() {
    const v = this.remoteVideo;
    const p = v.play();
    if (p && p.catch) {
      p.catch((err) => {
        if (err && err.name === "NotAllowedError") this.emit("autoplay-blocked");
      });
    }
  }

  closeTransport() {
    clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.restarting = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = null;
      try {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "leave" }));
        ws.close(1000);
      } catch { /* already closed */ }
    }
    if (this.pc) {
      this.pc.ontrack = this.pc.onconnectionstatechange = null;
      try { this.pc.close(); } catch { /* already closed */ }
      this.pc = null;
    }
    napalmsky.pc = null;
  }

  /** End of the call: close everything and release the camera. */
  close() {
    this.closedForGood = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    this.closeTransport();
    if (this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    this.localStream = null;
    this.mediaPromise = null;
    this.mediaSettled = false;
    this.info = null;
    this.hadConnection = false;
    this.localVideo.srcObject = null;
    this.remoteVideo.srcObject = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
