// My intro video: record one with the camera (MediaRecorder) or choose a file, upload it with a
// progress bar, follow its processing on the server, and show the result. Also the "Play intro"
// button on the deck's cards.

import { api, humanError } from "./api.js";
import { $, show, hide, h } from "./ui.js";
import { failed } from "./app.js";
import { app } from "./state.js";

export const MAX_INTRO_BYTES = 50 * 1024 * 1024;
export const MAX_INTRO_SECONDS = 60;
const INTRO_TYPES = ["video/webm", "video/mp4", "video/quicktime"];
// What MediaRecorder is asked for, best first (Safari records MP4 only).
const RECORDER_TYPES = ["video/webm;codecs=vp8,opus", "video/webm;codecs=vp9,opus",
  "video/webm;codecs=vp8", "video/webm", "video/mp4;codecs=avc1,mp4a", "video/mp4"];
const POLL_MS = 1000;

const intro = {
  generation: 0, // bumped on sign-out: late answers of the previous session are dropped
  pollTimer: null,
  busy: false, // uploading or recording
  stream: null,
  recorder: null,
  chunks: [],
  discard: false,
  endsAt: 0,
  countdownTimer: null,
  videoKey: "",
};

// ---------------------------------------------------------------- messages

/** "the video is larger than 50 MB" → "The video is larger than 50 MB." */
function sentence(text) {
  text = (text || "").trim();
  if (!text) return "";
  text = text[0].toUpperCase() + text.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** What an upload's failure means, in words (never the raw JSON). */
export function introErrorText(err) {
  const said = sentence(err && err.serverMessage);
  switch (err && err.code) {
    case "payload_too_large":
      return said || "That video is larger than 50 MB: please choose a shorter or smaller one.";
    case "unsupported_media_type":
      return said || "That file type isn't supported: use a WebM, MP4 or QuickTime video.";
    case "invalid_argument":
      return said || "That video couldn't be used: please try another one.";
    default:
      return humanError(err);
  }
}

function showIntroError(text) {
  $("intro-error").textContent = text;
  show($("intro-error"));
}
function clearIntroError() {
  $("intro-error").textContent = "";
  hide($("intro-error"));
}
function setStatus(text) {
  $("intro-status").textContent = text;
}

function setBusy(busy) {
  intro.busy = busy;
  $("intro-record").disabled = busy;
  $("intro-file").disabled = busy;
}

// ---------------------------------------------------------------- state from the server

/** On entering: show my intro as it stands (nothing when none was uploaded). */
export async function loadIntro() {
  const generation = ++intro.generation;
  clearTimeout(intro.pollTimer);
  try {
    const state = await api.introVideo();
    if (generation === intro.generation && !intro.busy) renderState(state, generation);
  } catch (err) {
    if (generation !== intro.generation) return;
    if (err.code === "not_found") renderNone();
    else console.warn("napalmsky: intro video:", err);
  }
}

/** Forget this session's intro (signed out). */
export function resetIntro() {
  intro.generation++;
  clearTimeout(intro.pollTimer);
  stopRecording(false);
  renderNone();
  clearIntroError();
  hide($("intro-upload"));
  setBusy(false);
}

function renderNone() {
  setStatus("");
  hideVideo();
}

function hideVideo() {
  const video = $("intro-video");
  if (video.hidden && !video.getAttribute("src")) return;
  video.pause();
  video.removeAttribute("src");
  video.removeAttribute("poster");
  video.load();
  intro.videoKey = "";
  hide(video);
}

function renderState(state, generation) {
  clearTimeout(intro.pollTimer);
  if (state.status === "queued" || state.status === "running") {
    const progress = Math.max(0, Math.min(100, Math.round(state.progress || 0)));
    setStatus(`Processing… ${progress}%`);
    hideVideo();
    intro.pollTimer = setTimeout(() => poll(generation), POLL_MS);
  } else if (state.status === "done" && state.videoUrl) {
    hide($("intro-upload"));
    setStatus("Your intro video is ready: people see it on your card.");
    const video = $("intro-video");
    const key = state.videoUrl.split("?")[0];
    if (intro.videoKey !== key) { // a new video (signed URLs change on every answer)
      intro.videoKey = key;
      if (state.posterUrl) video.poster = state.posterUrl;
      else video.removeAttribute("poster");
      video.src = state.videoUrl;
    }
    show(video);
  } else if (state.status === "failed") {
    hide($("intro-upload"));
    setStatus("");
    hideVideo();
    showIntroError(sentence(state.error) || "Your video couldn't be processed: try another one.");
  }
}

async function poll(generation, attempt = 0) {
  if (generation !== intro.generation) return;
  try {
    const state = await api.introVideo();
    if (generation === intro.generation) renderState(state, generation);
  } catch (err) {
    if (generation !== intro.generation) return;
    if (err.code === "unauthenticated" || err.code === "not_found") {
      if (err.code === "unauthenticated") failed(err);
      setStatus("");
      return;
    }
    // The server may be busy or restarting: keep asking, less often.
    intro.pollTimer = setTimeout(() => poll(generation, attempt + 1),
      Math.min(10_000, POLL_MS * 2 ** attempt));
  }
}

// ---------------------------------------------------------------- upload

function checkVideo(blob) {
  if (blob.size === 0) return "That video is empty.";
  if (blob.size > MAX_INTRO_BYTES) {
    return "That video is larger than 50 MB: please choose a shorter or smaller one.";
  }
  if (!INTRO_TYPES.includes(blob.type)) {
    return "Please choose a WebM, MP4 or QuickTime (.mov) video.";
  }
  return "";
}

export async function uploadIntro(blob) {
  clearIntroError();
  const problem = checkVideo(blob);
  if (problem) {
    showIntroError(problem);
    return;
  }
  const generation = ++intro.generation;
  clearTimeout(intro.pollTimer);
  setBusy(true);
  const progress = $("intro-upload-progress");
  progress.value = 0;
  show($("intro-upload"));
  setStatus("Uploading… 0%");
  try {
    const state = await api.putIntroVideo(blob, (loaded, total) => {
      if (generation !== intro.generation) return;
      const percent = total ? Math.round((loaded / total) * 100) : 0;
      progress.value = percent;
      setStatus(`Uploading… ${percent}%`);
    });
    if (generation !== intro.generation) return;
    progress.value = progress.max;
    renderState(state, generation);
  } catch (err) {
    if (generation !== intro.generation) return;
    hide($("intro-upload"));
    setStatus("");
    if (err.code === "unauthenticated") failed(err);
    else showIntroError(introErrorText(err));
  } finally {
    if (generation === intro.generation) setBusy(false);
  }
}

export function onIntroFile() {
  const input = $("intro-file");
  const file = input.files[0];
  if (!file) return;
  input.value = ""; // choosing the same file again uploads it again
  uploadIntro(file);
}

// ---------------------------------------------------------------- recording

function recorderType() {
  if (typeof MediaRecorder.isTypeSupported !== "function") return "";
  return RECORDER_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) || "";
}

async function openCamera() {
  try {
    return await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (err) {
    if (err.name === "NotAllowedError") throw err;
    // No microphone (or it is busy): a silent intro is still an intro.
    return navigator.mediaDevices.getUserMedia({ video: true });
  }
}

export async function startRecording() {
  clearIntroError();
  if (intro.busy) return;
  if (typeof MediaRecorder === "undefined" || !navigator.mediaDevices) {
    showIntroError("This browser can't record video: choose a video file instead.");
    return;
  }
  setBusy(true);
  let stream;
  try {
    stream = await openCamera();
  } catch (err) {
    setBusy(false);
    showIntroError(err.name === "NotAllowedError"
      ? "Camera access was refused. Allow it in your browser's site settings, or choose a video file."
      : err.name === "NotFoundError" ? "No camera was found: choose a video file instead."
        : humanError(err));
    return;
  }
  let recorder;
  try {
    const mimeType = recorderType();
    recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
  } catch (err) {
    stream.getTracks().forEach((t) => t.stop());
    setBusy(false);
    showIntroError(`This browser can't record video (${humanError(err)}): choose a video file instead.`);
    return;
  }
  intro.stream = stream;
  intro.recorder = recorder;
  intro.chunks = [];
  intro.discard = false;
  recorder.addEventListener("dataavailable", (ev) => {
    if (ev.data && ev.data.size) intro.chunks.push(ev.data);
  });
  recorder.addEventListener("stop", () => finishRecording(recorder));
  const preview = $("intro-preview");
  preview.srcObject = stream;
  preview.play().catch(() => {});
  hideVideo();
  setStatus("");
  show($("intro-recorder"));
  hide($("intro-record"));
  show($("intro-stop"));
  show($("intro-cancel"));
  recorder.start(1000);
  intro.endsAt = performance.now() + MAX_INTRO_SECONDS * 1000;
  tickCountdown();
  intro.countdownTimer = setInterval(tickCountdown, 250);
  $("intro-stop").focus();
}

function tickCountdown() {
  const left = Math.max(0, Math.ceil((intro.endsAt - performance.now()) / 1000));
  $("intro-countdown").textContent = String(left);
  if (app.call) stopRecording(false); // a call started: it needs the camera
  else if (left <= 0) stopRecording(true); // the limit: what was recorded is uploaded
}

/** Stop recording: upload what was recorded, or (`upload` false) throw it away. */
export function stopRecording(upload = true) {
  clearInterval(intro.countdownTimer);
  intro.countdownTimer = null;
  const recorder = intro.recorder;
  if (!recorder) return;
  intro.discard = !upload;
  if (recorder.state !== "inactive") recorder.stop(); // "stop" follows the last data
  else finishRecording(recorder);
}

function finishRecording(recorder) {
  if (intro.recorder !== recorder) return;
  intro.recorder = null;
  if (intro.stream) intro.stream.getTracks().forEach((t) => t.stop());
  intro.stream = null;
  $("intro-preview").srcObject = null;
  hide($("intro-recorder"));
  hide($("intro-stop"));
  hide($("intro-cancel"));
  show($("intro-record"));
  setBusy(false);
  const chunks = intro.chunks;
  intro.chunks = [];
  if (intro.discard) {
    if (app.me) $("intro-record").focus();
    return;
  }
  const type = (recorder.mimeType || (chunks[0] && chunks[0].type) || "video/webm")
    .split(";")[0].trim();
  $("intro-record").focus();
  uploadIntro(new Blob(chunks, { type }));
}

// ---------------------------------------------------------------- deck cards

/** The picture on a card: the intro's poster when there is one, else the selfie. */
export function cardPicture(person, avatarFor) {
  if (person.posterUrl) {
    return h("img", { class: "avatar avatar-photo intro-poster", src: person.posterUrl, alt: "",
      loading: "lazy" });
  }
  return avatarFor(person, "avatar-photo");
}

/** Play (or stop) a card's intro inline; the <video> exists only while it plays. */
export function toggleCardIntro(li, avatarFor) {
  if (li.dataset.playing) {
    stopCardIntro(li, avatarFor);
    return;
  }
  const person = app.deck.get(li.dataset.userId);
  if (!person || !person.videoUrl) return;
  for (const other of document.querySelectorAll("#deck li.person[data-playing]")) {
    stopCardIntro(other, avatarFor);
  }
  const video = h("video", { class: "avatar avatar-photo intro-card-video", controls: true,
    playsinline: true, preload: "auto", poster: person.posterUrl || null,
    "aria-label": `${person.name}'s intro video` });
  video.src = person.videoUrl;
  video.addEventListener("ended", () => stopCardIntro(li, avatarFor));
  li.querySelector(".avatar").replaceWith(video);
  li.dataset.playing = "true";
  const button = li.querySelector(".intro-play");
  button.textContent = "Stop intro";
  button.setAttribute("aria-label", `Stop ${person.name}'s intro video`);
  video.play().catch(() => {
    // Sound may need a gesture the browser didn't count: play it muted (the controls unmute).
    video.muted = true;
    video.play().catch(() => {});
  });
}

export function stopCardIntro(li, avatarFor) {
  const video = li.querySelector("video.intro-card-video");
  const hadFocus = !!video && video.contains(document.activeElement);
  if (video) {
    video.pause();
    video.removeAttribute("src");
    video.load();
  }
  delete li.dataset.playing;
  const person = app.deck.get(li.dataset.userId) || { name: "", posterUrl: null };
  if (video) video.replaceWith(cardPicture(person, avatarFor));
  const button = li.querySelector(".intro-play");
  button.textContent = "Play intro";
  button.setAttribute("aria-label", `Play ${person.name}'s intro video`);
  if (hadFocus) button.focus();
}

// ---------------------------------------------------------------- wiring

export function wireIntro() {
  $("intro-record").addEventListener("click", startRecording);
  $("intro-stop").addEventListener("click", () => stopRecording(true));
  $("intro-cancel").addEventListener("click", () => stopRecording(false));
  $("intro-file").addEventListener("change", onIntroFile);
}
