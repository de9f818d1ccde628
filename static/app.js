// The upload page's behaviour: choose, drop or paste an image, send it to /predict with
// fetch and draw the answer into the page's own <template>s. Without this file the form
// still works: it posts to "/" and the server renders the same markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("classify-form");
  if (!form) return;
  const input = $("image");
  const dropzone = $("dropzone");
  const preview = $("preview");
  const modelSelect = $("model");
  const modelAbout = $("model-about");
  const modelState = $("model-state");
  const modelNotes = $("model-notes");
  const urlInput = $("remote_url"); // absent when the server allows no custom URL
  const urlCheck = $("remote-url-check");
  const topK = $("top_k");
  const topKNote = $("top_k-note");
  const clearButton = $("clear");
  const output = $("output");
  const status = $("status");
  const errorBox = $("error");
  const result = $("result");
  const empty = $("empty");
  const explainSwitch = $("explain");
  const cropFrame = $("crop-frame");
  const heatmap = $("heatmap");
  const heatControls = $("heat-controls");
  const heatCaption = $("heat-caption");
  const heatOpacity = $("heat-opacity");
  const titles = JSON.parse(errorBox.dataset.titles || "{}");
  const maxBytes = Number(form.dataset.maxBytes) || Infinity;
  const baseTitle = document.title.split(" · ").pop();
  const URL_KEY = "classifier.remote_url";
  const SERVER_KEY = "classifier.server";
  const EXPLAIN_KEY = "classifier.explain";
  const OPACITY_KEY = "classifier.heat_opacity";

  let models = []; // the last GET /models answer
  let controller = null; // aborts the request in flight when a new one starts
  let previewUrl = null;
  let pollTimer = null;
  let shown = null; // the answer on show: { top, selected, labels and maps: class_id → label, explanation }
  let explaining = null; // aborts the explain_class request in flight

  // ---- Wording shared with the template's macros (the words themselves come from the server) ----

  function percent(score) {
    return score > 0 && score < 0.001 ? "<0.1%" : `${(score * 100).toFixed(1)}%`;
  }

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
  function modelLine(model) {
    if (model.status === "preparing") return `Preparing ${model.name}${model.status_text.slice("preparing".length)}.`;
    return `${model.name}: ${model.note}.`;
  }

  const usableNames = () =>
    models.filter((m) => ["loaded", "ready", "preparing"].includes(m.status)).map((m) => m.name).join(", ") || "none";

  // ---- Models and servers ----

  function serverChoice() {
    const checked = form.querySelector('input[name="server"]:checked');
    return checked ? checked.value : "local";
  }

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

  function describeModel() {
    const model = models.find((m) => m.name === modelSelect.value);
    if (!model) return;
    const local = serverChoice() === "local";
    modelAbout.textContent = local
      ? `${model.about} · ${model.weights} weights`
      : "The other server runs this model with its own weights.";
    modelState.hidden = !local || model.ready;
    modelState.textContent = modelLine(model);
  }

  async function refreshModels() {
    clearTimeout(pollTimer);
    try {
      const response = await fetch(form.dataset.models, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      const changed = JSON.stringify(body.models) !== JSON.stringify(models);
      models = body.models;
      if (changed) renderModels();
    } catch {
      return; // the list the server rendered into the page stays
    }
    if (models.some((m) => ["downloading", "preparing"].includes(m.status))) pollTimer = setTimeout(refreshModels, 2000);
  }

  function showServer() {
    if (urlInput) urlInput.required = serverChoice() === "custom";
    describeModel();
  }

  function onServerChange() {
    remember(SERVER_KEY, serverChoice());
    showServer();
    reclassify();
  }

  function remember(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      // storage disabled: nothing to remember with
    }
  }

  function recalled(key) {
    try {
      return localStorage.getItem(key) || "";
    } catch {
      return "";
    }
  }

  function recallServer() {
    const radio = form.querySelector(`input[name="server"][value="${CSS.escape(recalled(SERVER_KEY))}"]`);
    if (radio) radio.checked = true;
    if (urlInput && !urlInput.value) urlInput.value = recalled(URL_KEY);
  }

  function checkUrl() {
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

  function clampTopK() {
    // An out-of-range number would make the browser refuse every submit, new photos included.
    const min = Number(topK.min);
    const max = Number(topK.max);
    const typed = topK.valueAsNumber;
    const value = Number.isFinite(typed) ? Math.min(max, Math.max(min, Math.round(typed))) : Number(topK.defaultValue);
    topKNote.hidden = String(value) === topK.value;
    topKNote.textContent = `Shows ${min} to ${max} predictions, so ${value}.`;
    topK.value = value;
  }

  // ---- Choosing an image: file chooser, drag and drop, paste ----

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = file ? URL.createObjectURL(file) : null;
    dropzone.classList.toggle("has-image", Boolean(file));
    preview.hidden = !file;
    if (file) {
      preview.alt = `Preview of ${file.name}`;
      preview.src = previewUrl;
    } else {
      preview.removeAttribute("src");
    }
  }

  function imageChosen() {
    if (input.files.length > 1) {
      queueChosen(Array.from(input.files));
      input.value = ""; // the cards hold the files; one chosen later is the single-photo flow
      return;
    }
    const file = input.files[0];
    showPreview(file);
    dropAnswer(); // it was about the previous image
    empty.hidden = Boolean(file);
    if (!file) return;
    clampTopK();
    form.requestSubmit(); // the browser points at a field that still needs filling in
  }

  function useFile(file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    imageChosen();
  }

  const carriesFiles = (event) => Boolean(event.dataTransfer) && event.dataTransfer.types.includes("Files");
  let dragDepth = 0;

  // ---- Asking the server and showing the answer ----

  function codeParts(text) {
    return text.split("`").map((part, i) => {
      if (i % 2 === 0) return part;
      const code = document.createElement("code");
      code.textContent = part;
      return code;
    });
  }

  function clearOutput() {
    forgetExplanations();
    result.replaceChildren();
    errorBox.replaceChildren();
    empty.hidden = true;
    document.title = baseTitle;
  }

  function setBusy(busy) {
    status.classList.toggle("busy", busy);
    const model = models.find((m) => m.name === modelSelect.value);
    const preparing = model && model.status === "preparing" ? `${modelLine(model)} ` : ""; // say why it takes a while
    status.textContent = busy
      ? serverChoice() === "local"
        ? `${preparing}Classifying…`
        : "Asking the other server…"
      : "";
    output.setAttribute("aria-busy", String(busy));
    // Stacked layout (phones): the photo, where the heatmap appears with its label just below,
    // stays in view; only a file the browser cannot show brings the answer's place into view.
    if (!busy) return;
    if (!preview.hidden) reveal(preview, "nearest");
    else if (output.getBoundingClientRect().top > window.innerHeight * 0.75) reveal(output, "start");
  }

  function reveal(element, block) {
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    element.scrollIntoView({ block, behavior: still ? "auto" : "smooth" });
  }

  function showError(code, message) {
    const title = document.createElement("p");
    title.className = "error-title";
    title.textContent = titles[code] || "The request failed.";
    const text = document.createElement("p");
    text.className = "error-message";
    text.append(...codeParts(message));
    errorBox.replaceChildren(title, text);
  }

  function showResult(answer, file) {
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
    const labels = new Map(answer.predictions.map((p) => [p.class_id, p.display_label]));
    shown = { top: top && top.class_id, selected: null, labels, maps: new Map() };
    if (answer.explanation) {
      shown.maps.set(answer.explanation.class_id, answer.explanation);
      showExplanation(answer.explanation.class_id);
    }
    // A model that has just answered here is loaded: a menu still saying "preparing" is out of date.
    const answering = models.find((m) => m.name === answer.model);
    if (answer.server === "local" && answering && !answering.ready) refreshModels();
  }

  // ---- Where it looked: the heatmap over the photo ----

  function forgetExplanations() {
    stopExplaining();
    shown = null;
    hideHeatmap();
  }

  function stopExplaining() {
    if (explaining) explaining.abort();
    explaining = null;
  }

  function hideHeatmap() {
    cropFrame.hidden = true;
    heatControls.hidden = true;
    heatmap.removeAttribute("src");
    for (const row of result.querySelectorAll(".prediction-row")) row.setAttribute("aria-pressed", "false");
  }

  function drawHeatmap(explanation) {
    // crop is in the photo's pixels after EXIF orientation: what the browser shows
    // (image-orientation: from-image) and what naturalWidth/Height measure. In percentages of
    // those, the frame stays on the crop at whatever size the photo is shown.
    const [left, top, right, bottom] = explanation.crop;
    const width = preview.naturalWidth;
    const height = preview.naturalHeight;
    if (!width || !height) return; // a file the browser cannot show has no preview to draw on
    Object.assign(cropFrame.style, {
      left: `${(100 * left) / width}%`,
      top: `${(100 * top) / height}%`,
      width: `${(100 * (right - left)) / width}%`,
      height: `${(100 * (bottom - top)) / height}%`,
    });
    const label = shown.labels.get(explanation.class_id) || explanation.label;
    const words = `Where it looked for ${label}. ${explanation.summary}`;
    heatmap.src = explanation.heatmap;
    heatmap.alt = words;
    heatCaption.textContent = words;
    cropFrame.hidden = false;
    heatControls.hidden = false;
  }

  function drawWhenShown(explanation) {
    const draw = () => {
      if (shown && shown.selected === explanation.class_id) drawHeatmap(explanation);
    };
    if (preview.complete && preview.naturalWidth) draw();
    else preview.addEventListener("load", draw, { once: true });
  }

  // Another class's map is one more request with explain_class (kept for a second look), not
  // every top-k map in each answer. Measured on loopback (EfficientNetLite0, 2 shared cores,
  // chelsea.png and grace_hopper.jpg, p50 of 15): one map is 15-29 KB of JSON and 1-3 ms of
  // server time; a request with explain_class re-sends the photo (61-240 KB) and takes
  // 16-55 ms. All maps would add k x 15-29 KB (up to 580 KB at top_k 20) to every answer,
  // clicked or not, and most answers never are.
  async function showExplanation(classId) {
    stopExplaining();
    shown.selected = classId;
    for (const row of result.querySelectorAll(".prediction-row")) {
      row.setAttribute("aria-pressed", String(row.dataset.classId === classId));
    }
    const known = shown.maps.get(classId);
    if (known) {
      drawWhenShown(known);
      return;
    }
    const mine = new AbortController();
    explaining = mine;
    const answer = await post({ explain: "1", explain_class: classId }, mine.signal);
    if (!answer || mine !== explaining) return; // aborted, or another bar was chosen meanwhile
    explaining = null;
    if (answer.error || !answer.explanation) {
      hideHeatmap(); // not the last class's map under this class's name
      const error = answer.error || { code: "no_explanation", message: "Its answer has no explanation: an older version?" };
      showError(error.code, error.message);
      return;
    }
    shown.maps.set(classId, answer.explanation);
    drawWhenShown(answer.explanation);
  }

  function onRowClick(event) {
    const row = event.target.closest("button.prediction-row");
    if (!row || !shown) return;
    if (!explainSwitch.checked) {
      explainSwitch.checked = true;
      remember(EXPLAIN_KEY, "on");
    }
    showExplanation(row.dataset.classId);
    if (preview.getBoundingClientRect().bottom < 0) reveal(preview, "nearest"); // phones: the photo is above
  }

  function onExplainSwitch() {
    remember(EXPLAIN_KEY, explainSwitch.checked ? "on" : "off");
    if (!shown) return;
    if (explainSwitch.checked) {
      showExplanation(shown.selected || shown.top);
    } else {
      stopExplaining();
      hideHeatmap();
    }
  }

  function setOpacity() {
    heatmap.style.opacity = String(heatOpacity.valueAsNumber / 100);
  }

  const CODE_FOR_STATUS = { 413: "request_entity_too_large", 415: "unsupported_image_type", 504: "remote_timeout" };

  async function classify() {
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
    if (serverChoice() === "custom") remember(URL_KEY, urlInput.value.trim());
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
      const model = models.find((m) => m.name === modelSelect.value);
      if (controller) return; // a newer request took over meanwhile
      showError(answer.error.code, model ? `${modelLine(model)} Can run here now: ${usableNames()}.` : answer.error.message);
    } else {
      showError(answer.error.code, answer.error.message);
    }
  }

  // POST the form with ``extra`` fields: the answer, an { error } to show, or null once aborted.
  async function post(extra, signal, files = [input.files[0]]) {
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

  function dropAnswer() {
    if (controller) controller.abort();
    controller = null;
    setBusy(false);
    clearOutput();
  }

  function reclassify() {
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

  function clearAll() {
    dropAnswer();
    clearQueue();
    input.value = "";
    showPreview(null);
    empty.hidden = false;
    input.focus();
  }

  // ---- Many photos: a card each, a few requests at a time ----

  const queue = $("queue");
  const grid = $("grid");
  const queueBar = $("queue-bar");
  const queueCount = $("queue-count");
  const queueSaid = $("queue-said");
  const queueFilter = $("queue-filter");
  const dropzoneTitle = $("dropzone-title");
  const dropzoneSub = $("dropzone-sub");
  dropzoneTitle.dataset.empty = dropzoneTitle.textContent;
  dropzoneSub.dataset.empty = dropzoneSub.textContent;
  const IN_FLIGHT = 1; // requests at once: NGINX takes one at a time per address (classifier-locations.conf)
  const PER_REQUEST = 8; // photos per request (the server takes up to CLASSIFIER_MAX_IMAGES, 32 by default)
  const BATCH_BYTES = 8 * 1024 * 1024; // per request, far below the server's 64 MiB body limit
  const STATE_WORDS = { waiting: "Waiting", working: "Working", done: "Done", failed: "Failed", cancelled: "Cancelled" };
  let tiles = []; // { file, element, state, answer, error } in the order chosen
  let waiting = []; // tiles not yet sent
  let running = new Set(); // AbortControllers of the requests in flight
  let toldTenth = -1;

  const looksLikeImage = (file) => file.type.startsWith("image/") || /\.(jpe?g|png|gif|webp|bmp|tiff?|heic|avif)$/i.test(file.name);

  function enqueue(files) {
    queue.hidden = false;
    for (const file of files) {
      const element = $("tile-template").content.firstElementChild.cloneNode(true);
      element.querySelector(".tile-name").textContent = file.webkitRelativePath || file.name;
      const tile = { file, element, state: "waiting", answer: null, error: null };
      element.querySelector(".tile-button").addEventListener("click", () => openTile(tile));
      tiles.push(tile);
      waiting.push(tile);
      grid.append(element);
    }
    filterTiles();
    showProgress();
    pump();
  }

  // Files chosen, dropped or picked as a folder: queued as cards, said in the drop zone (which
  // would still read "Drop an image here"), and the grid brought into view (it starts below the fold).
  function queueChosen(files, skipped = 0) {
    showPreview(null); // the drop zone now speaks for the queue; a card shows its photo when opened
    dropAnswer();
    empty.hidden = false;
    enqueue(files);
    const photos = `${tiles.length} ${tiles.length === 1 ? "photo" : "photos"}`;
    dropzoneTitle.textContent = `${photos} queued`;
    const others = skipped === 1 ? "1 file that is not an image was" : `${skipped} files that are not images were`;
    dropzoneSub.textContent = `${skipped ? `${others} skipped. ` : ""}Their cards are below; choose or drop more to add them.`;
    queueSaid.textContent = `${dropzoneTitle.textContent}. ${dropzoneSub.textContent}`;
    reveal(queue, "start");
  }

  function clearQueue() {
    if (!tiles.length) return;
    cancelQueue();
    tiles = [];
    grid.replaceChildren();
    queue.hidden = true;
    toldTenth = -1;
    dropzoneTitle.textContent = dropzoneTitle.dataset.empty;
    dropzoneSub.textContent = dropzoneSub.dataset.empty;
  }

  function setState(tile, state) {
    tile.state = state;
    tile.element.dataset.state = state;
    tile.element.querySelector(".tile-state").textContent = STATE_WORDS[state];
  }

  // The next photos for one request: several per request run through the model in batches
  // (docs/many-images.md, bench/many_images.py: 55 photos/s one per request, 66 at 8 per request), bounded in
  // bytes so a request stays far below the server's body limit.
  function nextBatch() {
    const batch = [waiting.shift()];
    let bytes = batch[0].file.size;
    while (waiting.length && batch.length < PER_REQUEST && bytes + waiting[0].file.size <= BATCH_BYTES) {
      bytes += waiting[0].file.size;
      batch.push(waiting.shift());
    }
    return batch;
  }

  function pump() {
    while (running.size < IN_FLIGHT && waiting.length) send(nextBatch());
  }

  async function send(batch) {
    const mine = new AbortController();
    running.add(mine);
    for (const tile of batch) {
      setState(tile, "working");
      drawThumbnail(tile);
    }
    const answer = await post({}, mine.signal, batch.map((tile) => tile.file));
    running.delete(mine);
    if (!answer) return; // cancelled
    // One photo is answered as one; several with a result each, in order; a whole-request error fails them all.
    const { results, ...common } = answer;
    batch.forEach((tile, i) => {
      if (answer.error) finish(tile, null, answer.error);
      else if (!results) finish(tile, answer, null);
      else finish(tile, results[i].error ? null : { ...common, ...results[i] }, results[i].error);
    });
    filterTiles();
    showProgress();
    pump();
  }

  function finish(tile, answer, error) {
    tile.answer = answer;
    tile.error = error;
    setState(tile, error ? "failed" : "done");
    const top = answer && answer.predictions[0];
    tile.element.querySelector(".tile-label").textContent = error
      ? titles[error.code] || "The request failed."
      : top ? `${top.display_label} ${percent(top.score)}` : "";
  }

  // A small thumbnail drawn in the browser: the full photo is decoded once, scaled down, and let go.
  async function drawThumbnail(tile) {
    const canvas = tile.element.querySelector(".tile-thumb");
    let bitmap;
    try {
      bitmap = await createImageBitmap(tile.file, { resizeWidth: canvas.width, resizeQuality: "medium" });
    } catch {
      return; // not an image the browser can draw; the server says what it is
    }
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const [width, height] = [bitmap.width * scale, bitmap.height * scale];
    canvas.getContext("2d").drawImage(bitmap, (canvas.width - width) / 2, (canvas.height - height) / 2, width, height);
    bitmap.close();
  }

  function showProgress() {
    const finished = tiles.filter((tile) => !["waiting", "working"].includes(tile.state)).length;
    const words = `${finished} of ${tiles.length}`;
    queueBar.max = tiles.length;
    queueBar.value = finished;
    queueCount.textContent = words;
    const tenth = Math.floor((10 * finished) / tiles.length);
    if (tenth !== toldTenth) {
      toldTenth = tenth;
      queueSaid.textContent = `${words} photos classified`;
    }
    $("queue-cancel").hidden = finished === tiles.length;
  }

  function cancelQueue() {
    for (const tile of waiting) setState(tile, "cancelled");
    waiting = [];
    for (const mine of running) mine.abort();
    for (const tile of tiles) if (tile.state === "working") setState(tile, "cancelled");
    running = new Set();
    showProgress();
  }

  function filterTiles() {
    const wanted = queueFilter.value.trim().toLowerCase();
    for (const tile of tiles) {
      const text = tile.element.querySelector(".tile-button").textContent.toLowerCase();
      tile.element.hidden = Boolean(wanted) && !text.includes(wanted);
    }
  }

  // A card's photo and answer, shown as one chosen photo is: the bars, the heatmap, another class's map.
  function openTile(tile) {
    if (!tile.answer && !tile.error) return;
    const transfer = new DataTransfer();
    transfer.items.add(tile.file);
    input.files = transfer.files;
    showPreview(tile.file);
    dropAnswer();
    if (tile.answer) showResult(tile.answer, tile.file);
    else showError(tile.error.code, tile.error.message);
    reveal(output, "nearest");
  }

  function rows() {
    return tiles.map((tile) => ({
      filename: tile.file.webkitRelativePath || tile.file.name,
      state: tile.state,
      predictions: tile.answer ? tile.answer.predictions.map((p) => ({ label: p.display_label, class_id: p.class_id, score: p.score })) : [],
      error: tile.error,
    }));
  }

  // One CSV format with `classifier predict --csv` (classifier/reports.py; docs/cli.md, "CSV reports").
  // A cell a spreadsheet would run as a formula starts with ' (OWASP's advice on CSV injection).
  const csvCell = (value) => {
    const text = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
    return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };

  function toCsv() {
    const lines = [["path", "state", "model", "label", "class_id", "score", "top_k", "error_code", "error_message"]];
    for (const tile of tiles) {
      const predictions = tile.answer ? tile.answer.predictions : [];
      const top = predictions[0];
      lines.push([tile.file.webkitRelativePath || tile.file.name, tile.state, tile.answer ? tile.answer.model : "",
        top ? top.label : "", top ? top.class_id : "", top ? top.score.toFixed(4) : "",
        predictions.map((p) => `${p.label}:${p.score.toFixed(4)}`).join(";"),
        tile.error ? tile.error.code : "", tile.error ? tile.error.message : ""]);
    }
    // UTF-8 with a byte-order mark, as the CLI writes it, so that Excel reads accented names right.
    return "\ufeff" + lines.map((line) => line.map((value) => csvCell(String(value))).join(",")).join("\r\n") + "\r\n";
  }

  function download(name, type, text) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type }));
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href)); // the download has its own copy by then
  }

  $("folder-pick").hidden = false;
  $("folder").addEventListener("change", (event) => {
    const files = Array.from(event.target.files);
    const images = files.filter(looksLikeImage);
    if (images.length) queueChosen(images, files.length - images.length);
    else showError("unsupported_image_type", `That folder holds no images (${files.length} other ${files.length === 1 ? "file" : "files"}).`);
    event.target.value = "";
  });
  $("queue-cancel").addEventListener("click", cancelQueue);
  queueFilter.addEventListener("input", filterTiles);
  $("queue-csv").addEventListener("click", () => download("classified.csv", "text/csv", toCsv()));
  $("queue-json").addEventListener("click", () => download("classified.json", "application/json", JSON.stringify(rows(), null, 2)));

  // ---- The camera: one frame at a time, the next sent when the last is answered ----

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
        cameraFps.textContent = titles[answer.error.code] || "The request failed.";
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

  cameraStart.hidden = false;
  cameraStart.addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("camera-capture").addEventListener("click", capture);

  // ---- Examples, and the same request from a program ----

  async function useExample(event) {
    const button = event.target.closest("button[data-example]");
    if (!button) return;
    const response = await fetch(button.dataset.example);
    const name = button.dataset.example.split("/").pop().split("?")[0];
    useFile(new File([await response.blob()], name, { type: response.headers.get("Content-Type") || "image/jpeg" }));
  }

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

  $("examples").hidden = false;
  $("examples").addEventListener("click", useExample);
  $("api-panel").hidden = false;
  $("api-panel").addEventListener("click", copyCommand);
  form.addEventListener("change", describeApi);
  form.addEventListener("input", describeApi);
  describeApi();

  // ---- Wiring ----

  input.addEventListener("change", imageChosen);
  preview.addEventListener("error", () => {
    // Not something the browser can show (the server will say what it is).
    preview.hidden = true;
    dropzone.classList.remove("has-image");
  });

  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth += 1;
    dropzone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropzone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // allows the drop anywhere on the page
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // the browser would otherwise open the file
    dragDepth = 0;
    dropzone.classList.remove("dragging");
    const files = Array.from(event.dataTransfer.files);
    if (files.length > 1) queueChosen(files);
    else if (files.length) useFile(files[0]);
  });
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    const image = files.find((file) => file.type.startsWith("image/"));
    if (!image) return; // ordinary text pasted into a field
    event.preventDefault();
    useFile(image);
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classify();
  });
  form.querySelectorAll('input[name="server"]').forEach((radio) => radio.addEventListener("change", onServerChange));
  modelSelect.addEventListener("change", () => {
    describeModel();
    reclassify();
  });
  topK.addEventListener("change", () => {
    clampTopK();
    reclassify();
  });
  if (urlInput) {
    urlInput.addEventListener("change", () => {
      checkUrl();
      remember(URL_KEY, urlInput.value.trim());
      if (serverChoice() === "custom") reclassify();
    });
    urlInput.addEventListener("input", () => {
      urlCheck.hidden = true; // judged again when the typing is done
    });
  }
  clearButton.hidden = false;
  clearButton.addEventListener("click", clearAll);
  result.addEventListener("click", onRowClick);
  explainSwitch.addEventListener("change", onExplainSwitch);
  heatOpacity.addEventListener("input", setOpacity);
  heatOpacity.addEventListener("change", () => remember(OPACITY_KEY, heatOpacity.value));

  recallServer();
  if (recalled(EXPLAIN_KEY) === "off") explainSwitch.checked = false;
  heatOpacity.value = recalled(OPACITY_KEY) || heatOpacity.defaultValue;
  setOpacity();
  if (urlInput && urlInput.value) checkUrl();
  showServer();
  refreshModels();
})();
