// The model menu: each model's name and state in a person's words, kept current from GET /models.

import { $ } from "./dom.js?v=19cca49a794f";
import { serverChoice } from "./options.js?v=8b87c046b7b2";

const form = $("classify-form");
const modelSelect = $("model");
const modelAbout = $("model-about");
const modelState = $("model-state");
const modelNotes = $("model-notes");
let models = []; // the last GET /models answer
let pollTimer = null;
const listeners = []; // called after each change of `models`

// Lines that speak of a model's state (the "Classifying…" line) follow the menu: the first
// GET /models may answer after a photo is already on its way, and a state changes while it is.
export const onModelsChange = (listener) => listeners.push(listener);

// The page speaks to the person choosing a model: a few words (the server's note), never the
// operator's files, settings or commands, which GET /models, the docs and the logs carry.
// A model that is not ready is its name and a word or two, which fit a phone's menu.
function optionText(model) {
  if (!model.ready) return `${model.name} (${optionTag(model)})`;
  if (model.precision === "int8") return int8Text(model);
  const short = model.about.split(", ").slice(0, 2).join(", "); // speed and size
  return `${model.name} · ${short}`;
}

function optionTag(model) {
  const words = { unavailable: "unavailable", preparing: "preparing" }[model.status];
  return words || model.status_text.replace(/^weights /, "");
}

function int8Text(model) {
  const check = model.check;
  const figures = check // none until `classifier export` has measured it here
    ? `${check.speedup}x faster, agrees ${Math.round(check.top1_agreement * 100)}%`
    : "int8";
  return `${model.name} — ${figures}`;
}

// "Preparing EfficientNetLite0 for first use, about 15 s, once." or "NASNetMobile: its weights are not on this server."
export function modelLine(model) {
  if (model.status === "preparing") return `Preparing ${model.name}${model.status_text.slice("preparing".length)}.`;
  return `${model.name}: ${model.note}.`;
}

export const usableNames = () =>
  models.filter((m) => ["loaded", "ready", "preparing"].includes(m.status)).map((m) => m.name).join(", ") || "none";

export const modelNamed = (name) => models.find((m) => m.name === name);

export const chosenModel = () => modelNamed(modelSelect.value);

function renderModels() {
  // The person's choice stays chosen whatever its state: its state and hint say why it may not run.
  const chosen = modelSelect.value;
  modelSelect.replaceChildren(...models.map((m) => new Option(optionText(m), m.name)));
  modelSelect.value = chosen;

  const notReady = models.filter((m) => !m.ready);
  modelNotes.hidden = notReady.length === 0;
  modelNotes.querySelector("summary").textContent =
    `${notReady.length} of ${models.length} models are not ready here`;
  $("models-usable").textContent = `Can run here now: ${usableNames()}.`;
  modelNotes.querySelector("ul").replaceChildren(
    ...notReady.map((m) => {
      const item = document.createElement("li");
      const name = document.createElement("strong");
      name.textContent = m.name;
      item.append(name, `: ${m.note}.`);
      return item;
    })
  );
  describeModel();
}

export function describeModel() {
  const model = chosenModel();
  if (!model) return;
  const local = serverChoice() === "local";
  modelAbout.textContent = local
    ? `${model.about} · ${model.weights} weights`
    : "The other server runs this model with its own weights.";
  modelState.hidden = !local || model.ready;
  modelState.textContent = modelLine(model);
}

export async function refreshModels() {
  clearTimeout(pollTimer);
  try {
    const response = await fetch(form.dataset.models, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const body = await response.json();
    const changed = JSON.stringify(body.models) !== JSON.stringify(models);
    models = body.models;
    if (changed) {
      renderModels();
      listeners.forEach((listener) => listener());
    }
  } catch {
    return; // the list the server rendered into the page stays
  }
  if (models.some((m) => ["downloading", "preparing"].includes(m.status))) pollTimer = setTimeout(refreshModels, 2000);
}
