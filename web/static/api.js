// REST client for /api/v1 and the human wording of every server error code.

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
  unavailable: "The service is temporarily unavailable: please try again shortly.",
  internal: "Something went wrong on our side.",
  network: "Can't reach the server: check your connection.",
};

export class ApiError extends Error {
  constructor(code, message, status = 0, retryAfter = null) {
    super(message || code);
    this.name = "ApiError";
    this.code = code;
    this.serverMessage = message || "";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** A sentence for any error: the human meaning of its code, plus the server's words. */
export function humanError(err) {
  if (err instanceof ApiError || (err && typeof err.code === "string" && ERROR_MESSAGES[err.code])) {
    const base = ERROR_MESSAGES[err.code] || "Something went wrong.";
    let detail = err.serverMessage ?? err.message ?? "";
    if (detail === err.code || detail === "internal error") detail = "";
    let text = detail ? `${base} (${detail})` : base;
    if (err.retryAfter) text += ` Try again in ${err.retryAfter} s.`;
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
 */
export async function request(method, path, { body, auth = true } = {}) {
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
  try {
    response = await fetch(PREFIX + path, { method, headers, body: payload });
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
      response.status, retry ? Number(retry) : null);
  }
  return data;
}

function codeForStatus(status) {
  return ({ 400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
    404: "not_found", 409: "already_exists", 413: "payload_too_large",
    415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable" })[status] || "internal";
}

export const api = {
  config: () => request("GET", "/config", { auth: false }),
  guest: (name, gender) => request("POST", "/auth/guest", { body: { name, gender }, auth: false }),
  login: (email, password) =>
    request("POST", "/auth/login", { body: { email, password }, auth: false }),
  upgrade: (email, password) => request("POST", "/auth/upgrade", { body: { email, password } }),
  logout: () => request("POST", "/auth/logout"),
  me: () => request("GET", "/me"),
  putSelfie: (blob) => request("PUT", "/me/selfie", { body: blob }),
  deck: () => request("GET", "/deck?limit=50"),
  calls: () => request("GET", "/me/calls"),
};
