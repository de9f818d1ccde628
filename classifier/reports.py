"""What ``classifier predict`` writes: lines in a terminal, and one row per image in CSV or JSON.

The files are for the person who classified a folder and now sorts, filters or counts the
answers: CSV opens in a spreadsheet (a header row; UTF-8 with the byte-order mark, so that
Excel reads accented file names right), JSON for a program. Both hold every image, the
failed ones with the error's code and message, in the order the images were found.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

from .batch import Outcome
from .files import write_bytes

CSV_COLUMNS = ["path", "model", "label", "class_id", "score", "top_k", "error_code", "error_message"]


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
    """``CSV_COLUMNS``; ``top_k`` is ``label:score;label:score;...``, best first."""
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS)
    writer.writeheader()
    for outcome in outcomes:
        row = record(outcome)
        error = row["error"] or {}
        writer.writerow({
            "path": row["path"], "model": row["model"], "label": row["label"], "class_id": row["class_id"],
            "score": row["score"],
            "top_k": ";".join(f"{p['label']}:{p['score']:.4f}" for p in row["predictions"]),
            "error_code": error.get("code"), "error_message": error.get("message"),
        })
    write_bytes(target, text.getvalue().encode("utf-8-sig"))
