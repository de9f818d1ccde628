// An error in the answer's place: the server's title for its code, and its message.

import { $ } from "./dom.js?v=19cca49a794f";
import { codeParts } from "./format.js?v=95e4a7f170c8";

const errorBox = $("error");
const titles = JSON.parse(errorBox.dataset.titles || "{}");

export const titleOf = (code) => titles[code] || "The request failed.";

export function showError(code, message) {
  const title = document.createElement("p");
  title.className = "error-title";
  title.textContent = titleOf(code);
  const text = document.createElement("p");
  text.className = "error-message";
  text.append(...codeParts(message));
  errorBox.replaceChildren(title, text);
}

export function clearError() {
  errorBox.replaceChildren();
}
