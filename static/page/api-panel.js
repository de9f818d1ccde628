// "Use via API": the curl and Python commands that send what the page would send, with copy buttons.

import { $ } from "./dom.js?v=19cca49a794f";
import { serverChoice } from "./options.js?v=8b87c046b7b2";

const form = $("classify-form");

// The form's fields as a program sends them: what the page would send for this photo.
function apiFields() {
  const fields = Array.from(new FormData(form)).filter(([name, value]) => name !== "image" && value !== "");
  return fields.filter(([name, value]) => !(name === "remote_url" && serverChoice() !== "custom") && typeof value === "string");
}

const shellQuote = (text) => (/^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`);

function describeApi() {
  const endpoint = new URL(form.dataset.api, window.location.href).href;
  const fields = apiFields();
  $("api-curl").textContent = ["curl", "-F", "image=@photo.jpg", ...fields.flatMap(([name, value]) => ["-F", shellQuote(`${name}=${value}`)]), endpoint].join(" ");
  const data = fields.map(([name, value]) => `${JSON.stringify(name)}: ${JSON.stringify(value)}`).join(", ");
  $("api-python").textContent = [
    "import requests",
    "",
    "with open(\"photo.jpg\", \"rb\") as photo:",
    `    answer = requests.post(${JSON.stringify(endpoint)}, files={"image": photo},`,
    `                           data={${data}}, timeout=60).json()`,
    "print(answer[\"predictions\"])",
  ].join("\n");
}

async function copyCommand(event) {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const copied = $("api-copied");
  try {
    await navigator.clipboard.writeText($(button.dataset.copy).textContent);
    copied.textContent = `${button.textContent.replace("Copy ", "")} command copied.`;
  } catch {
    copied.textContent = "The browser did not allow copying; select the command and copy it.";
  }
}

export function start() {
  $("api-panel").hidden = false;
  $("api-panel").addEventListener("click", copyCommand);
  form.addEventListener("change", describeApi);
  form.addEventListener("input", describeApi);
  describeApi();
}
