// The camera: one frame at a time, the next sent when the last is answered; a frame can be queued.

import { post } from "./api.js?v=0b826a6c63b5";
import { $ } from "./dom.js?v=19cca49a794f";
import { titleOf } from "./errors.js?v=a35837132922";
import { percent } from "./format.js?v=95e4a7f170c8";
import { enqueue } from "./queue.js?v=b8f70e533c9f";

const cameraPanel = $("camera");
const cameraStart = $("camera-start");
const cameraProblem = $("camera-problem");
const video = $("camera-video");
const cameraLabels = $("camera-labels");
const cameraFps = $("camera-fps");
const frameCanvas = document.createElement("canvas");
// Who stopped the camera decides what helps: the person (allow it again), the site's own
// Permissions-Policy header (only whoever runs the site can change it), or a page on plain
// http:// elsewhere than this machine (browsers offer cameras to secure pages only).
const CAMERA_PROBLEMS = {
  NotAllowedError: "The camera was refused. Allow it for this site (the camera icon in the address bar or the site settings), then press Use camera again.",
  policy: "This site does not allow its pages to use the camera (its Permissions-Policy header forbids it), so the browser never asks. Choose or drop a photo instead; whoever runs the site can allow camera=(self).",
  insecure: "Browsers offer a camera only to https:// pages (or localhost), and this page came over plain http://. Open it at its https:// address, or choose or drop a photo instead.",
  NotFoundError: "No camera was found on this device.",
  NotReadableError: "The camera is busy: another program is using it.",
  absent: "This browser offers no camera here.",
};
const CAMERA_RETRY_MS = 1000;
let camera = null; // { stream, controller } while the camera is on
let captured = 0;

async function startCamera() {
  cameraProblem.hidden = true;
  const blocked = cameraBlocked();
  if (blocked || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    explainCamera(blocked || "absent");
    return;
  }
  let stream;
  try {
    // The rear lens on a phone (what is in front of the person), any camera elsewhere.
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false });
  } catch (failure) {
    explainCamera(cameraBlocked() || failure.name);
    return;
  }
  camera = { stream, controller: new AbortController() };
  video.srcObject = stream;
  await video.play();
  cameraPanel.hidden = false;
  cameraStart.hidden = true;
  classifyFrames(camera);
}

// "insecure" or "policy" when the browser will not offer the camera whatever the person says.
function cameraBlocked() {
  if (!window.isSecureContext) return "insecure";
  const policy = document.permissionsPolicy || document.featurePolicy; // Chromium's; others say NotAllowedError only
  return policy && !policy.allowsFeature("camera") ? "policy" : null;
}

function explainCamera(reason) {
  cameraProblem.textContent = CAMERA_PROBLEMS[reason] || `The camera could not start (${reason}).`;
  cameraProblem.hidden = false;
  if (reason === "insecure") linkSecurePage(cameraProblem.textContent);
}

// On plain http, a link to this page at https:// when the site answers there with a
// certificate the browser trusts (a self-signed one fails the fetch: no link to a warning).
// Only for a site on port 80, as NGINX serves it: the Content-Security-Policy's 'self'
// covers the same host on 443 from there, and another port means no such site (python3 app.py).
async function linkSecurePage(explanation) {
  if (location.port !== "") return;
  const secure = `https://${location.hostname}${location.pathname}${location.search}`;
  try {
    await fetch(`https://${location.hostname}/healthz`, { mode: "no-cors", cache: "no-store" });
  } catch {
    return;
  }
  if (cameraProblem.hidden || cameraProblem.textContent !== explanation) return;
  const link = document.createElement("a");
  link.href = secure;
  link.textContent = "Open this page at https://";
  cameraProblem.append(" ", link);
}

function grabFrame() {
  frameCanvas.width = video.videoWidth;
  frameCanvas.height = video.videoHeight;
  frameCanvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => frameCanvas.toBlob(resolve, "image/jpeg", 0.85));
}

async function classifyFrames(mine) {
  let last = performance.now();
  while (camera === mine) {
    const frame = new File([await grabFrame()], "camera.jpg", { type: "image/jpeg" });
    // No heatmap for a moving picture: the labels are what is read live.
    const answer = await post({ explain: null }, mine.controller.signal, [frame]);
    if (!answer || camera !== mine) return;
    const now = performance.now();
    cameraFps.textContent = `${(1000 / (now - last)).toFixed(1)} fps`;
    last = now;
    if (answer.error) {
      cameraLabels.replaceChildren();
      cameraFps.textContent = titleOf(answer.error.code);
      // A server that is down or busy answers at once: one try a second, not a flood.
      await new Promise((resolve) => setTimeout(resolve, CAMERA_RETRY_MS));
      continue;
    }
    cameraLabels.replaceChildren(...answer.predictions.map((p) => {
      const item = document.createElement("li");
      item.textContent = `${p.display_label} ${percent(p.score)}`;
      return item;
    }));
  }
}

async function capture() {
  captured += 1;
  enqueue([new File([await grabFrame()], `camera-${captured}.jpg`, { type: "image/jpeg" })]);
}

function stopCamera() {
  if (!camera) return;
  camera.controller.abort();
  for (const track of camera.stream.getTracks()) track.stop(); // the camera's light goes off
  camera = null;
  video.srcObject = null;
  cameraPanel.hidden = true;
  cameraStart.hidden = false;
  cameraLabels.replaceChildren();
  cameraFps.textContent = "";
  cameraStart.focus();
}

export function start() {
  cameraStart.hidden = false;
  cameraStart.addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("camera-capture").addEventListener("click", capture);
}
