// Sends the form to /predict with fetch and draws the predictions as labelled bars.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("predict-form");
  const input = document.getElementById("image");
  const preview = document.getElementById("preview");
  const error = document.getElementById("error");
  const list = document.getElementById("predictions");
  const details = document.getElementById("details");

  input.addEventListener("change", () => {
    const file = input.files[0];
    preview.hidden = !file;
    if (file) preview.src = URL.createObjectURL(file);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    list.replaceChildren();
    details.textContent = "Classifying…";
    error.hidden = true;
    try {
      const response = await fetch(form.action, { method: "POST", body: new FormData(form) });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      for (const p of body.predictions) {
        const item = document.createElement("li");
        const bar = document.createElement("meter");
        bar.value = p.score;
        item.textContent = `${p.label.replaceAll("_", " ")} ${(p.score * 100).toFixed(1)}% `;
        item.append(bar);
        list.append(item);
      }
      details.textContent = `${body.model} (${body.weights} weights), ${body.server} server, ${body.timing_ms.total} ms`;
    } catch (failure) {
      details.textContent = "";
      error.textContent = failure.message;
      error.hidden = false;
    }
  });
});
