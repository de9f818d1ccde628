// Many photos: a card each, sent a few per request, one request at a time, downloadable as CSV or JSON.

import { post } from "./api.js?v=0b826a6c63b5";
import { dropAnswer, showResult } from "./answer.js?v=00db0cc2589e";
import { $, download, fileList, reveal } from "./dom.js?v=19cca49a794f";
import { showError, titleOf } from "./errors.js?v=a35837132922";
import { percent } from "./format.js?v=95e4a7f170c8";
import { showPreview } from "./preview.js?v=4981db65fce4";
import { toCsv, toJson } from "./report.js?v=7089b2df97e7";

const input = $("image");
const output = $("output");
const empty = $("empty");
const queue = $("queue");
const grid = $("grid");
const queueBar = $("queue-bar");
const queueCount = $("queue-count");
const queueSaid = $("queue-said");
const queueFilter = $("queue-filter");
const dropzoneTitle = $("dropzone-title");
const dropzoneSub = $("dropzone-sub");
const IN_FLIGHT = 1; // requests at once: NGINX takes one at a time per address (classifier-locations.conf)
const PER_REQUEST = 8; // photos per request (the server takes up to CLASSIFIER_MAX_IMAGES, 32 by default)
const BATCH_BYTES = 8 * 1024 * 1024; // per request, far below the server's 64 MiB body limit
const STATE_WORDS = { waiting: "Waiting", working: "Working", done: "Done", failed: "Failed", cancelled: "Cancelled" };
let tiles = []; // { file, element, state, answer, error } in the order chosen
let waiting = []; // tiles not yet sent
let running = new Set(); // AbortControllers of the requests in flight
let toldTenth = -1;

const looksLikeImage = (file) => file.type.startsWith("image/") || /\.(jpe?g|png|gif|webp|bmp|tiff?|heic|avif)$/i.test(file.name);

export function enqueue(files) {
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
export function queueChosen(files, skipped = 0) {
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

export function clearQueue() {
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
// (docs/many-images.md, bench/many_images.py: 55 photos/s one per request, 66 at 8 per request),
// bounded in bytes so a request stays far below the server's body limit.
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
    ? titleOf(error.code)
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
  input.files = fileList(tile.file);
  showPreview(tile.file);
  dropAnswer();
  if (tile.answer) showResult(tile.answer, tile.file);
  else showError(tile.error.code, tile.error.message);
  reveal(output, "nearest");
}

export function start() {
  dropzoneTitle.dataset.empty = dropzoneTitle.textContent;
  dropzoneSub.dataset.empty = dropzoneSub.textContent;
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
  $("queue-csv").addEventListener("click", () => download("classified.csv", "text/csv", toCsv(tiles)));
  $("queue-json").addEventListener("click", () => download("classified.json", "application/json", toJson(tiles)));
}
