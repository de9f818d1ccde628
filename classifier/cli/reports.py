"""What ``classifier predict`` writes: lines in a terminal, and one row per image in CSV or JSON.

The files are for the person who classified a folder and now sorts, filters or counts the
answers: CSV opens in a spreadsheet (a header row; UTF-8 with the byte-order mark, so that
Excel reads accented file names right), JSON for a program. Both hold every image, the
failed ones with the error's code and message, in the order the images were found.

The CSV columns are the page's "Download CSV" too (static/page/report.js; docs/cli.md, "CSV
reports"): one format, whichever way a folder was classified. A cell a spreadsheet would take
for a formula (a label or message from a server, a file name) starts with ``'``, as OWASP
recommends against CSV injection. Terminal lines show control characters as escapes: a
server's text cannot move the cursor, retitle the window or set the clipboard.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path

from classifier.cli.discovery import Outcome
from classifier.files import write_bytes

CSV_COLUMNS = ["path", "state", "model", "label", "class_id", "score", "top_k", "error_code", "error_message"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list: what makes a cell a formula
# C0 and C1 controls and DEL (escape sequences start with ESC or CSI), and the bidirectional
# overrides that make text read other than it is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(line: str) -> str:
    """``line`` with every control character written as its escape (``\\x1b``), for a terminal."""
    return _CONTROL.sub(lambda match: ascii(match.group())[1:-1], line)


def csv_cell(value: object) -> object:
    """``value``, with ``'`` before a text that a spreadsheet would run as a formula."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def terminal_lines(outcome: Outcome, heatmap: Path | None = None) -> list[str]:
    """A heading per image, then its ranked labels (what ``predict`` has always printed)."""
    answer = outcome.answer or {}
    lines = [f"{outcome.path} ({answer['model']}, {answer['weights']} weights)"]
    lines += [f"  {p['score']:7.2%}  {p['label']}  ({p['class_id']})" for p in answer["predictions"]]
    if heatmap:
        explanation = answer["explanation"]
        lines.append(f"  where it looked for {explanation['label']}: {heatmap} ({explanation['summary']})")
    return lines


def json_line(outcome: Outcome, heatmap: Path | None = None) -> str:
    """One JSON document: the API's answer for the image, with the image's path first."""
    return json.dumps({"image": str(outcome.path), **({"heatmap_file": str(heatmap)} if heatmap else {}),
                       **(outcome.answer or {})})


def record(outcome: Outcome) -> dict[str, object]:
    """One image's row, as the JSON file holds it."""
    answer = outcome.answer or {}
    predictions = [{"label": p["label"], "class_id": p["class_id"], "score": p["score"]}
                   for p in answer.get("predictions", [])]
    top = predictions[0] if predictions else {}
    error = {"code": outcome.error_code, "message": outcome.error_message} if not outcome.ok else None
    return {"path": str(outcome.path), "model": answer.get("model"), "weights": answer.get("weights"),
            "label": top.get("label"), "class_id": top.get("class_id"), "score": top.get("score"),
            "predictions": predictions, "error": error}


def write_json(target: Path, outcomes: Iterable[Outcome]) -> None:
    """A JSON list of ``record``s."""
    write_bytes(target, (json.dumps([record(outcome) for outcome in outcomes], indent=1) + "\n").encode())


def write_csv(target: Path, outcomes: Iterable[Outcome]) -> None:
    """``CSV_COLUMNS``; ``top_k`` is ``label:score;label:score;...``, best first, scores to 4 places."""
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS)
    writer.writeheader()
    for outcome in outcomes:
        row = record(outcome)
        error = row["error"] or {}
        writer.writerow({key: csv_cell(value) for key, value in {
            "path": row["path"], "state": "done" if outcome.ok else "failed", "model": row["model"],
            "label": row["label"], "class_id": row["class_id"],
            "score": None if row["score"] is None else f"{row['score']:.4f}",
            "top_k": ";".join(f"{p['label']}:{p['score']:.4f}" for p in row["predictions"]),
            "error_code": error.get("code"), "error_message": error.get("message"),
        }.items()})
    write_bytes(target, text.getvalue().encode("utf-8-sig"))
