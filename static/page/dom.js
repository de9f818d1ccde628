// Small DOM helpers every part of the page uses.

export const $ = (id) => document.getElementById(id);

// Scrolls to an element, without motion for a person who asked for less of it.
export function reveal(element, block) {
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  element.scrollIntoView({ block, behavior: still ? "auto" : "smooth" });
}

// A FileList holding just ``file``: what a file input accepts as its files.
export function fileList(file) {
  const transfer = new DataTransfer();
  transfer.items.add(file);
  return transfer.files;
}

// Saves ``text`` as the file ``name`` of MIME ``type``.
export function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href)); // the download has its own copy by then
}
