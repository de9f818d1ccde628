// The chosen photo shown in the drop zone, from a blob: URL let go when another is chosen.

import { $ } from "./dom.js?v=19cca49a794f";

const dropzone = $("dropzone");
export const preview = $("preview");
let previewUrl = null;

export function showPreview(file) {
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

export function start() {
  preview.addEventListener("error", () => {
    // Not something the browser can show (the server will say what it is).
    preview.hidden = true;
    dropzone.classList.remove("has-image");
  });
}
