// Signing up (with an optional selfie from a file or the camera), logging in, upgrading a guest.

import { api, setToken, humanError } from "./api.js";
import {
  $, show, hide, showError, clearError, notify, clearNotice, openDialog, closeDialog,
} from "./ui.js";
import { enter, setMe, failed } from "./app.js";
import { MAX_SELFIE_BYTES, app } from "./state.js";

// ---------------------------------------------------------------- sign up / log in

export async function onSignup(ev) {
  ev.preventDefault();
  clearError();
  const name = $("signup-name").value.trim();
  if (!name) {
    showError("Please enter your name.");
    $("signup-name").focus();
    return;
  }
  const button = $("signup-submit");
  button.disabled = true;
  try {
    const result = await api.guest(name, $("signup-gender").value, checkingBrowser);
    setToken(result.token);
    let user = result.user;
    const selfie = app.pendingSelfie;
    if (selfie) {
      try {
        const uploaded = await api.putSelfie(selfie);
        user = { ...user, selfieUrl: uploaded.url };
      } catch (err) {
        enter(user);
        showError(`${humanError(err)} Your account was created without the photo.`);
        return;
      }
    }
    enter(user);
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
    stopSelfieCamera();
  }
}

/** While a sign-up's proof-of-work is solved (many sign-ups from this network): say so. */
function checkingBrowser() {
  notify("Checking your browser… (a second or two)", { sticky: true });
  return clearNotice;
}

export async function onLogin(ev) {
  ev.preventDefault();
  clearError();
  const email = $("login-email").value.trim();
  const password = $("login-password").value;
  if (!email || !password) {
    showError("Enter your email and password.");
    (email ? $("login-password") : $("login-email")).focus();
    return;
  }
  const button = $("login-submit");
  button.disabled = true;
  try {
    const result = await api.login(email, password);
    setToken(result.token);
    $("login-password").value = "";
    enter(result.user);
  } catch (err) {
    if (err.code === "unauthenticated") showError("Wrong email or password.");
    else showError(err);
  } finally {
    button.disabled = false;
  }
}

export function setPendingSelfie(blob) {
  app.pendingSelfie = blob;
  const thumb = $("selfie-thumb");
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  if (blob) {
    thumb.src = URL.createObjectURL(blob);
    show(thumb);
  } else {
    thumb.removeAttribute("src");
    hide(thumb);
  }
  show($("selfie-clear"), !!blob);
}

export function onSelfieFile() {
  const file = $("signup-selfie").files[0];
  if (!file) return setPendingSelfie(null);
  if (file.size > MAX_SELFIE_BYTES) {
    showError("That photo is larger than 5 MB: please choose a smaller one.");
    $("signup-selfie").value = "";
    return setPendingSelfie(null);
  }
  if (!["image/jpeg", "image/png", "image/webp"].includes(file.type)) {
    showError("Please choose a JPEG, PNG or WebP image.");
    $("signup-selfie").value = "";
    return setPendingSelfie(null);
  }
  clearError();
  setPendingSelfie(file);
}

export async function startSelfieCamera() {
  clearError();
  try {
    app.selfieStream = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (err) {
    showError(err.name === "NotAllowedError"
      ? "Camera access was refused. Allow it in your browser's site settings, or choose a photo file."
      : err.name === "NotFoundError" ? "No camera was found: choose a photo file instead."
        : humanError(err));
    return;
  }
  const video = $("selfie-preview");
  video.srcObject = app.selfieStream;
  show($("selfie-camera-panel"));
  video.play().catch(() => {});
  $("selfie-capture").focus();
}

export function stopSelfieCamera() {
  if (app.selfieStream) app.selfieStream.getTracks().forEach((t) => t.stop());
  app.selfieStream = null;
  $("selfie-preview").srcObject = null;
  hide($("selfie-camera-panel"));
}

export function captureSelfie() {
  const video = $("selfie-preview");
  const width = video.videoWidth || 640;
  const height = video.videoHeight || 480;
  const scale = Math.min(1, 1024 / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  canvas.toBlob((blob) => {
    if (!blob) {
      showError("Could not capture a photo: try again.");
      return;
    }
    $("signup-selfie").value = "";
    setPendingSelfie(blob);
    stopSelfieCamera();
    $("selfie-camera").focus();
  }, "image/jpeg", 0.9);
}

// ---------------------------------------------------------------- upgrade

export function openUpgrade() {
  openDialog($("upgrade-dialog"), closeUpgrade);
}
export function closeUpgrade() {
  closeDialog($("upgrade-dialog"));
}

export async function onUpgrade(ev) {
  ev.preventDefault();
  clearError();
  const email = $("upgrade-email").value.trim();
  const password = $("upgrade-password").value;
  if (!email || !password) {
    showError("Enter an email and a password.");
    return;
  }
  const button = $("upgrade-submit");
  button.disabled = true;
  app.tokenRotating = true; // the old token is revoked: ignore the old socket's goodbye
  try {
    const result = await api.upgrade(email, password);
    setToken(result.token);
    setMe(result.user);
    app.signaling.stop();
    app.signaling.start();
    $("upgrade-password").value = "";
    closeUpgrade();
    notify(`Account saved: log in with ${result.user.email || email} next time.`);
  } catch (err) {
    failed(err);
  } finally {
    app.tokenRotating = false;
    button.disabled = false;
    if (app.me && app.signaling && app.signaling.stopped) app.signaling.start();
  }
}
