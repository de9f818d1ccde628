// Wording shared with the template's macros (the words themselves come from the server).

export function percent(score) {
  return score > 0 && score < 0.001 ? "<0.1%" : `${(score * 100).toFixed(1)}%`;
}

// Hints quote commands in `backticks`: text and <code> elements to append.
export function codeParts(text) {
  return text.split("`").map((part, i) => {
    if (i % 2 === 0) return part;
    const code = document.createElement("code");
    code.textContent = part;
    return code;
  });
}
