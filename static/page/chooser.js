// Choosing photos: the file chooser, drag and drop anywhere on the page, paste, the examples, Clear.

import { dropAnswer } from "./answer.js?v=00db0cc2589e";
import { $, fileList } from "./dom.js?v=19cca49a794f";
import { clampTopK } from "./options.js?v=8b87c046b7b2";
import { showPreview } from "./preview.js?v=4981db65fce4";
import { clearQueue, queueChosen } from "./queue.js?v=b8f70e533c9f";

const form = $("classify-form");
const input = $("image");
const dropzone = $("dropzone");
const empty = $("empty");
const clearButton = $("clear");
let dragDepth = 0;

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
  input.files = fileList(file);
  imageChosen();
}

const carriesFiles = (event) => Boolean(event.dataTransfer) && event.dataTransfer.types.includes("Files");

// The photos that ship with the app, fetched and classified as if chosen.
async function useExample(event) {
  const button = event.target.closest("button[data-example]");
  if (!button) return;
  const response = await fetch(button.dataset.example);
  const name = button.dataset.example.split("/").pop().split("?")[0];
  useFile(new File([await response.blob()], name, { type: response.headers.get("Content-Type") || "image/jpeg" }));
}

function clearAll() {
  dropAnswer();
  clearQueue();
  input.value = "";
  showPreview(null);
  empty.hidden = false;
  input.focus();
}

function startDragAndDrop() {
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
}

export function start() {
  $("examples").hidden = false;
  $("examples").addEventListener("click", useExample);
  input.addEventListener("change", imageChosen);
  startDragAndDrop();
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    const image = files.find((file) => file.type.startsWith("image/"));
    if (!image) return; // ordinary text pasted into a field
    event.preventDefault();
    useFile(image);
  });
  clearButton.hidden = false;
  clearButton.addEventListener("click", clearAll);
}
