// The queue's cards as files to download: CSV as `classifier predict --csv` writes it, or JSON.

const nameOf = (tile) => tile.file.webkitRelativePath || tile.file.name;

export function toJson(tiles) {
  const rows = tiles.map((tile) => ({
    filename: nameOf(tile),
    state: tile.state,
    predictions: tile.answer ? tile.answer.predictions.map((p) => ({ label: p.display_label, class_id: p.class_id, score: p.score })) : [],
    error: tile.error,
  }));
  return JSON.stringify(rows, null, 2);
}

// One CSV format with `classifier predict --csv` (classifier/cli/reports.py; docs/cli.md, "CSV reports").
// A cell a spreadsheet would run as a formula starts with ' (OWASP's advice on CSV injection).
const csvCell = (value) => {
  const text = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
};

export function toCsv(tiles) {
  const lines = [["path", "state", "model", "label", "class_id", "score", "top_k", "error_code", "error_message"]];
  for (const tile of tiles) {
    const predictions = tile.answer ? tile.answer.predictions : [];
    const top = predictions[0];
    lines.push([nameOf(tile), tile.state, tile.answer ? tile.answer.model : "",
      top ? top.label : "", top ? top.class_id : "", top ? top.score.toFixed(4) : "",
      predictions.map((p) => `${p.label}:${p.score.toFixed(4)}`).join(";"),
      tile.error ? tile.error.code : "", tile.error ? tile.error.message : ""]);
  }
  // UTF-8 with a byte-order mark, as the CLI writes it, so that Excel reads accented names right.
  return "\ufeff" + lines.map((line) => line.map((value) => csvCell(String(value))).join(",")).join("\r\n") + "\r\n";
}
