"""What a Keras weights file must hold for each architecture, checked without TensorFlow.

Keras loads a legacy ``.h5`` weights file by order: the n-th layer with weights in the file
goes into the n-th layer with weights in the model, and every array must have the shape the
layer expects. ``data/weights_layouts.json`` lists those shapes per model (written from Keras
by ``python3 -m classifier.cli.weights_layouts`` whenever the registry gains a Keras model), so a serving process can tell a real weights file
from a captive portal's page, a cut-short transfer or a file for another model by reading
the file's HDF5 metadata: no arrays read, no TensorFlow imported (about 60 ms for ResNet50's
300 arrays, once per file version and process).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h5py

Layout = list[list[list[int]]]  # per layer with weights, the shape of each of its arrays
LAYOUTS_FILE = "weights_layouts.json"


@functools.cache
def expected_layouts() -> dict[str, Layout]:
    return json.loads(resources.files("classifier").joinpath("data", LAYOUTS_FILE).read_text())


def problem(path: Path, model: str) -> str | None:
    """Why ``path`` cannot be ``model``'s weights, in a few words; ``None`` if it can."""
    import h5py  # 80 ms, and only once a Keras weights file is here: not on every start of a worker

    expected = expected_layouts().get(model)
    try:
        with h5py.File(path, "r") as file:
            found = read_layout(file)
    except (OSError, ValueError, KeyError) as error:
        return f"is not a complete HDF5 weights file ({_first_line(error)})"
    if expected is None:
        return None
    if len(found) != len(expected):
        return f"holds {len(found)} layers with weights where {model} has {len(expected)}"
    for index, (got, want) in enumerate(zip(found, expected)):
        if got != want:
            return f"layer #{index} holds arrays of shapes {got} where {model} expects {want}"
    return None


def read_layout(file: h5py.File) -> Layout:
    """The shapes in a legacy Keras weights file, read the way Keras reads them."""
    group = file["model_weights"] if "layer_names" not in file.attrs and "model_weights" in file else file
    layout = []
    for name in _names(group, "layer_names"):
        layer = group[name]
        weights = _names(layer, "weight_names")
        if weights:
            layout.append([list(layer[weight].shape) for weight in weights])
    return layout


def _names(group: h5py.Group, attribute: str) -> list[str]:
    """An attribute list, which Keras splits into ``name0``, ``name1``... when it is large."""
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values, chunk = [], 0
        while f"{attribute}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attribute}{chunk}"])
            chunk += 1
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
