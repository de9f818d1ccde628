// POST /predict with the form's fields, the one request every part of the page sends.

import { $ } from "./dom.js?v=19cca49a794f";

const form = $("classify-form");
const input = $("image");
const CODE_FOR_STATUS = { 413: "request_entity_too_large", 415: "unsupported_image_type", 504: "remote_timeout" };

// POST the form with ``extra`` fields: the answer, an { error } to show, or null once aborted.
export async function post(extra, signal, files = [input.files[0]]) {
  const body = new FormData(form);
  body.delete("image"); // the photos this request is about (the input may hold others)
  for (const file of files) body.append("image", file);
  for (const [name, value] of Object.entries(extra)) {
    if (value === null) body.delete(name);
    else body.set(name, value);
  }
  let response;
  try {
    response = await fetch(form.dataset.api, { method: "POST", body, headers: { Accept: "application/json" }, signal });
  } catch (failure) {
    return failure.name === "AbortError" ? null : { error: { code: "network", message: "Check the connection and try again." } };
  }
  const answer = await response.json().catch(() => null);
  if (signal.aborted) return null;
  const answered = answer && (Array.isArray(answer.predictions) || (Array.isArray(answer.results) && answer.results.length === files.length));
  if (answer && (answer.error || (response.ok && answered))) return answer;
  const code = CODE_FOR_STATUS[response.status] || "internal_error";
  return { error: { code, message: `The server answered ${response.status} ${response.statusText} without an explanation.` } };
}
