"""A remote's answer checked against this service's own shapes and limits.

A remote is not trusted: it may be an old instance, a service a URL was pointed at by
mistake, or hostile. What it answered is accepted only in this service's shape, with no
text longer, no grid larger and no number outside what this service ever sends, so a
relayed answer costs neither this server nor its client more than one of its own. Forwarding
and the CLI's ``--remote`` check with the same functions; each raises ``ValueError`` for
anything that is not this service's answer.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from classifier.models.labels import Prediction
from classifier.runtimes.explain import heatmap_image

MAX_RELAYED_MESSAGE_CHARS = 300  # a remote's error message, as much as a person reads in one go
# The keys of this service's error object; a remote too old to send request_id has the first two.
ERROR_KEYS = {"code", "message", "request_id"}
ERROR_CODE = re.compile(r"[a-z_]{1,64}")  # what this service's codes look like; nothing else is relayed
MAX_GRID_SIDE = 64  # rows or columns of a relayed explanation grid (this service's models give 7)
MAX_CROP_COORDINATE = 1 << 20  # pixels: more than any image the limits let through
MAX_SUMMARY_CHARS = 300
# A model's name, its weights, a class's id or label: this service's are at most 30 characters.
# Longer text is not this service's answer (a label is repeated three times in ours).
MAX_NAME_CHARS = 100
MAX_TIMINGS = 16  # entries of a relayed timing_ms

Checked = TypeVar("Checked")


@dataclass(frozen=True)
class RemoteResult:
    """One image's part of a remote's answer to several: predictions, or its error."""

    predictions: list[Prediction]
    timing_ms: dict[str, float]
    explanation: dict[str, object] | None = None
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class RemoteAnswer:
    """A remote's checked answer: one result per image sent, in order."""

    model: str
    weights: str
    results: list[RemoteResult]
    timing_ms: dict[str, float]


def _malformed_is_value_error(check: Callable[..., Checked]) -> Callable[..., Checked]:
    """``check`` raising ``ValueError`` for anything malformed, a missing key or a wrong type
    included, so that its callers catch one exception."""

    @functools.wraps(check)
    def checked(*args: Any, **kwargs: Any) -> Checked:
        try:
            return check(*args, **kwargs)
        except (KeyError, TypeError) as error:
            raise ValueError(f"not this service's answer ({type(error).__name__} {error})") from None

    return checked


@_malformed_is_value_error
def checked_answer(document: object, images: int, explanation_expected: bool = False) -> RemoteAnswer:
    """A 200 answer's JSON ``document`` to ``images`` images, checked as this service's
    answer: one image is answered at the top level, several with ``results``, one each in
    order. With ``explanation_expected``, explanations are checked and kept (a missing one,
    from an instance older than explanations, is left out). ``ValueError`` if anything in
    it is not this service's shape, or larger than this service ever sends."""
    answer = _expect(document, dict)
    if images == 1:  # one part: the remote answers as to one image
        results = [_predictions(answer, explanation_expected)]
    else:
        results = [checked_result(item, explanation_expected) for item in _expect(answer["results"], list)]
    if len(results) != images:
        raise ValueError("results")
    return RemoteAnswer(checked_name(answer["model"]), checked_name(answer["weights"]), results, _timing(answer))


def json_or_none(body: bytes) -> object:
    """The JSON document, or ``None``; ``NaN`` and ``Infinity`` are not JSON and are refused."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError:
        return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def service_error_message(document: object) -> str | None:
    """The remote's own message, only if it answered in this service's error shape, shortened.

    Any other body may come from a service that is not an instance of this one (an internal
    API a URL was pointed at); relaying it would let a request read that service's answers.
    """
    if not (isinstance(document, dict) and document.keys() == {"error"}):
        return None
    error = document["error"]
    if not (isinstance(error, dict) and {"code", "message"} <= error.keys() <= ERROR_KEYS
            and all(isinstance(value, str) for value in error.values())):
        return None
    message = error["message"]
    return message if len(message) <= MAX_RELAYED_MESSAGE_CHARS else message[:MAX_RELAYED_MESSAGE_CHARS] + "…"


def service_error(document: object) -> tuple[str, str] | None:
    """The code and (shortened) message of ``document`` if it is this service's error object
    with a code of this service's form, else ``None``: only then is the code passed on."""
    message = service_error_message(document)
    if message is None or not ERROR_CODE.fullmatch(document["error"]["code"]):
        return None
    return document["error"]["code"], message


def _timing(answer: dict) -> dict[str, float]:
    """``timing_ms``: a few named times (this service sends up to five)."""
    timing = _expect(answer.get("timing_ms", {}), dict)
    if len(timing) > MAX_TIMINGS:
        raise ValueError("timing_ms")
    return {checked_name(name): _finite(value, 0, math.inf) for name, value in timing.items()}


@_malformed_is_value_error
def checked_result(value: object, explanation_expected: bool = False) -> RemoteResult:
    """One image's answer (the top level of an answer to one, or an entry of ``results``): its
    predictions, or an error in this service's shape, its message shortened as a relayed
    refusal's is. ``ValueError`` if it is neither."""
    item = _expect(value, dict)
    if "error" not in item:
        return _predictions(item, explanation_expected)
    error = service_error({"error": item["error"]})
    if error is None:
        raise ValueError("error")
    code, message = error
    return RemoteResult([], {}, error={"code": code, "message": message})


def _predictions(item: dict, explanation_expected: bool) -> RemoteResult:
    """An image's predictions and times, and its explanation if asked for and given."""
    explanation = item.get("explanation") if explanation_expected else None
    return RemoteResult([_prediction(entry) for entry in _expect(item["predictions"], list)], _timing(item),
                        None if explanation is None else checked_explanation(explanation))


def _prediction(item: dict) -> Prediction:
    return Prediction(checked_name(item["label"]), checked_name(item["class_id"]), _finite(item["score"], 0, 1))


@_malformed_is_value_error
def checked_explanation(value: object) -> dict[str, object]:
    """The remote's explanation with the contract's fields only, each checked: a crop of four
    ordered pixel coordinates, a rectangular grid of numbers in [0, 1], a PNG data URL whose
    image is the crop's size, of few chunks and decodes (``explain.heatmap_image``), so
    neither this server nor a client decoding it spends more than a small PNG's work.
    ``ValueError`` otherwise."""
    item = _expect(value, dict)
    crop = [_expect(number, int) for number in _expect(item["crop"], list)]
    if len(crop) != 4 or not (0 <= crop[0] < crop[2] <= MAX_CROP_COORDINATE
                              and 0 <= crop[1] < crop[3] <= MAX_CROP_COORDINATE):
        raise ValueError(crop)
    rows = _expect(item["grid"], list)
    grid = [[_finite(number, 0, 1) for number in _expect(row, list)] for row in rows]
    if not (0 < len(grid) <= MAX_GRID_SIDE and 0 < len(grid[0]) <= MAX_GRID_SIDE
            and all(len(row) == len(grid[0]) for row in grid)):
        raise ValueError("grid")
    heatmap = _expect(item["heatmap"], str)
    heatmap_image({"heatmap": heatmap, "crop": crop})  # a small PNG that decodes, or ValueError
    return {"class_id": checked_name(item["class_id"]), "label": checked_name(item["label"]), "crop": crop,
            "grid": grid, "heatmap": heatmap, "summary": _text(item["summary"], MAX_SUMMARY_CHARS)}


def checked_name(value: object) -> str:
    """A model's or weights' name, a class's id or label: a JSON string no longer than this service's."""
    return _text(value, MAX_NAME_CHARS)


def _text(value: object, most: int) -> str:
    """A JSON string of at most ``most`` characters."""
    text = _expect(value, str)
    if len(text) > most:
        raise ValueError(f"a text of {len(text)} characters")
    return text


def _finite(value: object, low: float, high: float) -> float:
    """A JSON number between ``low`` and ``high``; a string such as ``"inf"`` is not a number."""
    number = float(_expect(value, (int, float)))
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(value)
    return number


def _expect(value: object, kind: type | tuple[type, ...]) -> object:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(value)
    return value
