"""Parsing a JSON request body within a memory bound.

Python's parser makes an object for every value: 64 MiB of ``{}`` became 1.7 GB of dicts
(issue 21), ``["ab", ...]`` 15 times its size in strings. A prediction needs few values: the
options, and a string per image and file name. So the body's shape is counted from its bytes
before it is parsed (C-speed ``bytes.count``), and the numbers while it is parsed, and a body
with more of anything than a request can need is refused. Characters inside strings are counted
too, which only overcounts: base64 has none of them. What is left costs at most a pointer per
value (empty strings, ``true``, ``null`` are shared objects) besides the body's own text. The
costliest body let through (64 MiB: 4 Mi empty strings and one long string) took a uWSGI worker
to 216-241 MiB above its idle size, of which reading any 64 MiB body takes 156-164 MiB
(SECURITY.md; ``python3 -m bench.image_bombs --bodies``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from classifier.errors import InvalidRequest

# Objects and lists: a request has four at most (the document, settings, images, filenames).
MAX_CONTAINERS = 64
# Strings that are not empty, beyond two per image (the image and its file name): keys and options.
SPARE_STRINGS = 256
# Numbers (top_k, explain as 0/1): each would be an object of its own.
MAX_NUMBERS = 256
# Values in all, counted by their separators: a list slot is 8 bytes, so 32 MiB at most. Enough
# for a list far longer than CLASSIFIER_MAX_IMAGES, which is then refused by its length alone.
MAX_VALUES = 4 * 2**20


@dataclass
class _Numbers:
    """Counts the numbers as the parser makes them, and stops it past ``MAX_NUMBERS``."""

    count: int = 0

    def __call__(self, text: str) -> int | float:
        self.count += 1
        if self.count > MAX_NUMBERS:
            raise _too_many("numbers", MAX_NUMBERS)
        return float(text) if any(c in text for c in ".eEIN") else int(text)


def parse(body: bytes, max_images: int) -> object:
    """The JSON value in ``body``, or ``InvalidRequest`` if it is malformed or holds more
    objects, lists, strings, numbers or values than a request of ``max_images`` images needs."""
    check_shape(body, max_images)
    numbers = _Numbers()
    try:
        return json.loads(body, parse_int=numbers, parse_float=numbers, parse_constant=numbers)
    except (ValueError, RecursionError):
        raise InvalidRequest("The body is not a JSON object.") from None


def check_shape(body: bytes, max_images: int) -> None:
    """Refuse, from counts of its bytes alone, a body with more pieces than a request needs."""
    containers = body.count(b"{") + body.count(b"[")
    if containers > MAX_CONTAINERS:
        raise _too_many("objects and lists", MAX_CONTAINERS)
    strings = (body.count(b'"') - 2 * body.count(b'""')) // 2  # empty strings are shared: not counted
    most_strings = 2 * max_images + SPARE_STRINGS
    if strings > most_strings:
        raise _too_many("strings", most_strings)
    if body.count(b",") >= MAX_VALUES:
        raise _too_many("values", MAX_VALUES)


def _too_many(what: str, most: int) -> InvalidRequest:
    return InvalidRequest(f"The JSON body holds more {what} than a prediction request needs (at most {most:,}).")
