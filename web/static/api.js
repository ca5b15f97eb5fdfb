// REST client for /api/v1 and the human wording of every server error code.

import { solveChallenge } from "./pow.js";

const PREFIX = "/api/v1";
const TOKEN_KEY = "napalmsky.token";

/** What each error code means to a person (the server's own message is shown next to it). */
export const ERROR_MESSAGES = {
  invalid_argument: "Something in that request wasn't valid.",
  unauthenticated: "You're not signed in (or your session has ended).",
  permission_denied: "You're not allowed to do that.",
  not_found: "That no longer exists.",
  already_exists: "That already exists.",
  failed_precondition: "That can't be done right now.",
  payload_too_large: "That file is too large.",
  unsupported_media_type: "That file type isn't supported (use a JPEG, PNG or WebP image).",
  rate_limited: "Too many attempts: please wait a moment and try again.",
  challenge_required: "Too many sign-ups from your network right now: please try again.",
  challenge_failed: "Your browser check didn't go through: please try again.",
  unavailable: "The service is temporarily unavailable: please try again shortly.",
  internal: "Something went wrong on our side.",
  network: "Can't reach the server: check your connection.",
};

export class ApiError extends Error {
  constructor(code, message, status = 0, retryAfter = null, challenge = null) {
    super(message || code);
    this.name = "ApiError";
    this.code = code;
    this.serverMessage = message || "";
    this.status = status;
    this.retryAfter = retryAfter;
    this.challenge = challenge; // with `challenge_required`: {token, algorithm, bits, expiresIn}
  }
}

/** A wait in words: "about a minute", "about 5 minutes", "about 2 hours". */
export function aboutWait(seconds) {
  const minutes = Math.max(1, Math.ceil(seconds / 60));
  if (minutes === 1) return "about a minute";
  if (minutes < 90) return `about ${minutes} minutes`;
  const hours = Math.round(minutes / 60);
  return hours === 1 ? "about an hour" : `about ${hours} hours`;
}

/** A sentence for any error: the human meaning of its code, plus the server's words. */
export function humanError(err) {
  if (err instanceof ApiError || (err && typeof err.code === "string" && ERROR_MESSAGES[err.code])) {
    const base = ERROR_MESSAGES[err.code] || "Something went wrong.";
    let detail = err.serverMessage ?? err.message ?? "";
    if (detail === err.code || detail === "internal error") detail = "";
    // A server message written for people (a sentence) stands alone.
    let text = /^[A-Z].*[.!]$/.test(detail) ? detail : detail ? `${base} (${detail})` : base;
    if (err.retryAfter && !/try again in/i.test(text)) {
      text += ` Try again in ${aboutWait(err.retryAfter)}.`;
    }
    return text;
  }
  if (err && err.name === "NotAllowedError") {
    return "Camera/microphone access was refused. Allow it in your browser's site settings.";
  }
  if (err && err.name === "NotFoundError") return "No camera or microphone was found.";
  return (err && err.message) || String(err);
}

/** Seconds since the epoch from a protocol timestamp (ISO 8601, like the REST API's). */
export function seconds(iso) {
  return Date.parse(iso) / 1000;
}

// Estimated offset (ms) between the server's clock and ours, from the Date header.
let clockOffsetMs = 0;
export function serverNow() {
  return Date.now() + clockOffsetMs;
}
function noteServerDate(response) {
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isNaN(date)) return;
  const offset = date - Date.now();
  // The header has one-second resolution: only trust clearly wrong local clocks.
  clockOffsetMs = Math.abs(offset) > 2000 ? offset : 0;
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}
export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* private mode: the session lasts for this page only */
  }
}

/**
 * One REST call. `body` may be a plain object (sent as JSON) or a Blob (sent as is).
 * Resolves to the parsed JSON (or null for 204); rejects with ApiError.
 *
 * With `solve`, a 429 `challenge_required` is answered by solving its proof-of-work (pow.js)
 * and sending the request again with the solution; `solve` is called before solving and
 * the function it returns (if any) after, so the page can say what is happening.
 */
export async function request(method, path, { body, auth = true, solve = null } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await send(method, path, { body, auth });
    } catch (err) {
      const retryable = err.code === "challenge_required" && err.challenge ||
        err.code === "challenge_failed" && body && body.challenge;
      if (!solve || !retryable || attempt >= 3 || !body || body instanceof Blob) throw err;
      if (err.code === "challenge_failed") { // expired or already used: ask afresh
        const { challenge: _spent, ...fresh } = body;
        body = fresh;
        continue;
      }
      const done = solve(err.challenge);
      let counter;
      try {
        counter = await solveChallenge(err.challenge);
      } finally {
        if (typeof done === "function") done();
      }
      body = { ...body, challenge: { token: err.challenge.token, counter } };
    }
  }
}

const REQUEST_TIMEOUT_MS = 15000;
const UPLOAD_TIMEOUT_MS = 60000;

async function send(method, path, { body, auth }) {
  const headers = {};
  const token = getToken();
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body instanceof Blob) {
    payload = body;
    headers["Content-Type"] = body.type || "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let response;
  // A request the server never answers must not leave the page waiting for ever (a deck
  // that stays "loading" would never refresh): give up after a while, as a network error.
  const limit = body instanceof Blob ? UPLOAD_TIMEOUT_MS : REQUEST_TIMEOUT_MS;
  try {
    response = await fetch(PREFIX + path, { method, headers, body: payload,
      signal: AbortSignal.timeout(limit) });
  } catch (err) {
    throw new ApiError("network", "", 0);
  }
  noteServerDate(response);
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    const retry = response.headers.get("Retry-After");
    throw new ApiError(e.code || codeForStatus(response.status), e.message || "",
      response.status, retry ? Number(retry) : null, e.challenge || null);
  }
  return data;
}

/**
 * Upload a raw body with XMLHttpRequest, so `onProgress(loaded, total)` can follow the upload
 * (fetch can't report upload progress). Resolves to the parsed JSON; rejects with ApiError.
 */
export function upload(method, path, blob, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, PREFIX + path);
    const token = getToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", blob.type || "application/octet-stream");
    xhr.timeout = UPLOAD_TIMEOUT_MS * 5; // a 50 MB video on a slow line
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded, ev.total);
    };
    xhr.upload.onload = () => onProgress(blob.size, blob.size);
    xhr.onerror = () => reject(new ApiError("network", "", 0));
    xhr.ontimeout = () => reject(new ApiError("network", "", 0));
    xhr.onabort = () => reject(new ApiError("network", "", 0));
    xhr.onload = () => {
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(data);
        return;
      }
      const e = (data && data.error) || {};
      const retry = xhr.getResponseHeader("Retry-After");
      reject(new ApiError(e.code || codeForStatus(xhr.status), e.message || "", xhr.status,
        retry ? Number(retry) : null));
    };
    xhr.send(blob);
  });
}

function codeForStatus(status) {
  return ({ 400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
    404: "not_found", 409: "already_exists", 413: "payload_too_large",
    415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable" })[status] || "internal";
}

export const api = {
  config: () => request("GET", "/config", { auth: false }),
  /** Sign up; `solve(challenge)` is told when a proof-of-work is being solved (see request). */
  guest: (name, gender, solve = () => null) =>
    request("POST", "/auth/guest", { body: { name, gender }, auth: false, solve }),
  register: (email, password, name, gender, solve = () => null) =>
    request("POST", "/auth/register",
      { body: { email, password, name, gender }, auth: false, solve }),
  login: (email, password) =>
    request("POST", "/auth/login", { body: { email, password }, auth: false }),
  upgrade: (email, password) => request("POST", "/auth/upgrade", { body: { email, password } }),
  logout: () => request("POST", "/auth/logout"),
  me: () => request("GET", "/me"),
  putSelfie: (blob) => request("PUT", "/me/selfie", { body: blob }),
  /** My intro video (WebM, MP4 or QuickTime), with `onProgress(loaded, total)`. */
  putIntroVideo: (blob, onProgress) => upload("PUT", "/me/intro-video", blob, onProgress),
  introVideo: () => request("GET", "/me/intro-video"),
  deck: () => request("GET", "/deck?limit=50"),
  calls: () => request("GET", "/me/calls"),
  /** A recorded call's files (each participant's media), signed URLs once ready. */
  recordings: (roomId) => request("GET", `/calls/${encodeURIComponent(roomId)}/recordings`),
  deleteRecordings: (roomId) =>
    request("DELETE", `/calls/${encodeURIComponent(roomId)}/recordings`),
};
