// One photo's answer: ask the server, say it is working, draw the bars into the page's <template>s.

import { post } from "./api.js?v=0b826a6c63b5";
import { $, reveal } from "./dom.js?v=19cca49a794f";
import { clearError, showError } from "./errors.js?v=a35837132922";
import * as explain from "./explain.js?v=f1f10ef0fcbc";
import { percent } from "./format.js?v=95e4a7f170c8";
import { chosenModel, modelLine, modelNamed, onModelsChange, refreshModels, usableNames } from "./models.js?v=7320a2652e5b";
import { rememberUrl, serverChoice } from "./options.js?v=8b87c046b7b2";
import { preview } from "./preview.js?v=4981db65fce4";

const form = $("classify-form");
const input = $("image");
const output = $("output");
const status = $("status");
const result = $("result");
const empty = $("empty");
const maxBytes = Number(form.dataset.maxBytes) || Infinity;
const baseTitle = document.title.split(" · ").pop();
let controller = null; // aborts the request in flight when a new one starts

function clearOutput() {
  explain.forget();
  result.replaceChildren();
  clearError();
  empty.hidden = true;
  document.title = baseTitle;
}

// While a photo is on its way: a model still preparing says why this takes a while.
function busyText() {
  if (serverChoice() !== "local") return "Asking the other server…";
  const model = chosenModel();
  return model && model.status === "preparing" ? `${modelLine(model)} Classifying…` : "Classifying…";
}

function setBusy(busy) {
  status.classList.toggle("busy", busy);
  status.textContent = busy ? busyText() : "";
  output.setAttribute("aria-busy", String(busy));
  // Stacked layout (phones): the photo, where the heatmap appears with its label just below,
  // stays in view; only a file the browser cannot show brings the answer's place into view.
  if (!busy) return;
  if (!preview.hidden) reveal(preview, "nearest");
  else if (output.getBoundingClientRect().top > window.innerHeight * 0.75) reveal(output, "start");
}

onModelsChange(() => {
  if (status.classList.contains("busy")) status.textContent = busyText();
});

export function showResult(answer, file) {
  const block = $("result-template").content.firstElementChild.cloneNode(true);
  const rowTemplate = $("prediction-template").content.firstElementChild;
  const top = answer.predictions[0];
  block.querySelector(".top-label").textContent = top ? top.display_label : "";
  block.querySelector(".top-score").textContent = top ? percent(top.score) : "";
  const list = block.querySelector(".predictions");
  for (const p of answer.predictions) {
    const row = rowTemplate.cloneNode(true);
    row.querySelector(".prediction-row").dataset.classId = p.class_id;
    row.querySelector(".prediction-label").textContent = p.display_label;
    row.querySelector(".prediction-score").textContent = percent(p.score);
    row.querySelector(".prediction-bar").value = p.score;
    list.append(row);
  }
  const server = block.querySelector(".meta-server");
  const url = document.createElement("code");
  url.textContent = answer.server_url || "";
  if (answer.server === "local") server.textContent = "this server";
  else if (answer.server === "remote") server.append("the remote server ", url);
  else server.append(url);
  block.querySelector(".meta-model").textContent = answer.model;
  block.querySelector(".meta-weights").textContent = answer.weights;
  const timing = answer.timing_ms || {};
  const time = block.querySelector(".meta-time");
  time.textContent = `${Math.round(timing.total)} ms`;
  // A cold request's total includes loading the model (timing.load): say so, or 10 s looks like the norm.
  const parts = [];
  if (timing.load !== undefined) parts.push(`loading the model ${Math.round(timing.load)} ms`);
  if (timing.inference !== undefined) parts.push(`inference ${Math.round(timing.inference)} ms`);
  if (parts.length) {
    const detail = document.createElement("span");
    detail.className = "muted";
    detail.textContent = `(${parts.join(", ")})`;
    time.append(" ", detail);
  }
  result.replaceChildren(block);
  if (top) document.title = `${top.display_label} · ${baseTitle}`;
  if (file) preview.alt = `${file.name}: ${top ? top.display_label : "no prediction"}`;
  explain.offer(answer);
  // A model that has just answered here is loaded: a menu still saying "preparing" is out of date.
  const answering = modelNamed(answer.model);
  if (answer.server === "local" && answering && !answering.ready) refreshModels();
}

export async function classify() {
  const file = input.files[0];
  if (!file) return; // the input is required, so the browser asks for one first
  if (controller) controller.abort();
  controller = null;
  clearOutput();
  if (file.size > maxBytes) {
    setBusy(false);
    const bytes = file.size.toLocaleString("en-US");
    showError("image_too_large", `${file.name} is ${bytes} bytes; this server accepts images up to ${form.dataset.maxUpload}.`);
    return;
  }
  if (serverChoice() === "custom") rememberUrl();
  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  const answer = await post({}, mine.signal);
  if (!answer || mine !== controller) return; // a newer request took over
  controller = null;
  setBusy(false);
  if (!answer.error) {
    showResult(answer, file);
  } else if (answer.error.code === "model_unavailable") {
    await refreshModels(); // its state now, in a person's words (the message is for operators)
    const model = chosenModel();
    if (controller) return; // a newer request took over meanwhile
    showError(answer.error.code, model ? `${modelLine(model)} Can run here now: ${usableNames()}.` : answer.error.message);
  } else {
    showError(answer.error.code, answer.error.message);
  }
}

export function dropAnswer() {
  if (controller) controller.abort();
  controller = null;
  setBusy(false);
  clearOutput();
}

export function reclassify() {
  // A new model, server or count makes the answer on show stale: ask again, or say what is missing.
  if (!input.files[0]) return;
  const missing = Array.from(form.elements).find((field) => field.willValidate && !field.validity.valid);
  if (!missing) {
    classify();
    return;
  }
  dropAnswer();
  const name = missing.labels.length ? missing.labels[0].textContent : missing.name;
  showError("invalid_request", `${name}: ${missing.validationMessage}`);
}
