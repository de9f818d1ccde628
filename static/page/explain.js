// Where the model looked: the heatmap over the photo, for the top class or a row chosen.

import { post } from "./api.js?v=0b826a6c63b5";
import { $, reveal } from "./dom.js?v=19cca49a794f";
import { showError } from "./errors.js?v=a35837132922";
import { preview } from "./preview.js?v=4981db65fce4";
import { recalled, remember } from "./storage.js?v=75d82e02cecc";

const result = $("result");
const explainSwitch = $("explain");
const cropFrame = $("crop-frame");
const heatmap = $("heatmap");
const heatControls = $("heat-controls");
const heatCaption = $("heat-caption");
const heatOpacity = $("heat-opacity");
const EXPLAIN_KEY = "classifier.explain";
const OPACITY_KEY = "classifier.heat_opacity";
let shown = null; // the answer on show: { top, selected, labels and maps: class_id → label, explanation }
let explaining = null; // aborts the explain_class request in flight

// The answer now on show, whose rows may ask for their class's map; its own map drawn if it has one.
export function offer(answer) {
  const top = answer.predictions[0];
  const labels = new Map(answer.predictions.map((p) => [p.class_id, p.display_label]));
  shown = { top: top && top.class_id, selected: null, labels, maps: new Map() };
  if (answer.explanation) {
    shown.maps.set(answer.explanation.class_id, answer.explanation);
    showExplanation(answer.explanation.class_id);
  }
}

export function forget() {
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

export function start() {
  result.addEventListener("click", onRowClick);
  explainSwitch.addEventListener("change", onExplainSwitch);
  heatOpacity.addEventListener("input", setOpacity);
  heatOpacity.addEventListener("change", () => remember(OPACITY_KEY, heatOpacity.value));
}

// The switch and the heatmap's opacity as the person last left them.
export function recall() {
  if (recalled(EXPLAIN_KEY) === "off") explainSwitch.checked = false;
  heatOpacity.value = recalled(OPACITY_KEY) || heatOpacity.defaultValue;
  setOpacity();
}
