// The form's options beside the model: which server, another server's URL, how many predictions.

import { $ } from "./dom.js?v=19cca49a794f";
import { recalled, remember } from "./storage.js?v=75d82e02cecc";

const form = $("classify-form");
export const urlInput = $("remote_url"); // absent when the server allows no custom URL
const urlCheck = $("remote-url-check");
const topK = $("top_k");
const topKNote = $("top_k-note");
const URL_KEY = "classifier.remote_url";
const SERVER_KEY = "classifier.server";

export function serverChoice() {
  const checked = form.querySelector('input[name="server"]:checked');
  return checked ? checked.value : "local";
}

// Another server's URL is needed only when "another server" is chosen.
export function requireUrl() {
  if (urlInput) urlInput.required = serverChoice() === "custom";
}

export const rememberServer = () => remember(SERVER_KEY, serverChoice());

export function rememberUrl() {
  remember(URL_KEY, urlInput.value.trim());
}

export function recallServer() {
  const radio = form.querySelector(`input[name="server"][value="${CSS.escape(recalled(SERVER_KEY))}"]`);
  if (radio) radio.checked = true;
  if (urlInput && !urlInput.value) urlInput.value = recalled(URL_KEY);
}

export function checkUrl() {
  // A URL to another instance's page instead of its API: say which address would work.
  let suggestion = "";
  try {
    const url = new URL(urlInput.value.trim());
    if (!url.pathname.endsWith("/predict")) {
      url.pathname = `${url.pathname.replace(/\/+$/, "")}/predict`;
      url.search = "";
      url.hash = "";
      suggestion = url.href;
    }
  } catch {
    // not a URL (yet): the browser's own check of type="url" says so
  }
  const code = document.createElement("code");
  code.textContent = suggestion;
  urlCheck.replaceChildren("Did you mean ", code, "?");
  urlCheck.hidden = !suggestion;
}

export function hideUrlCheck() {
  urlCheck.hidden = true; // judged again when the typing is done
}

export function clampTopK() {
  // An out-of-range number would make the browser refuse every submit, new photos included.
  const min = Number(topK.min);
  const max = Number(topK.max);
  const typed = topK.valueAsNumber;
  const value = Number.isFinite(typed) ? Math.min(max, Math.max(min, Math.round(typed))) : Number(topK.defaultValue);
  topKNote.hidden = String(value) === topK.value;
  topKNote.textContent = `Shows ${min} to ${max} predictions, so ${value}.`;
  topK.value = value;
}
