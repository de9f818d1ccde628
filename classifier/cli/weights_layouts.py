"""Write ``data/weights_layouts.json`` from the Keras architectures of the registry (imports Keras).

Run ``python3 -m classifier.cli.weights_layouts`` after adding a Keras model to the registry:
without its layout, a weights file for it is checked only for being a whole HDF5 file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py

from classifier.models.layouts import LAYOUTS_FILE, Layout, read_layout
from classifier.models.registry import REGISTRY
from classifier.models.weights import KerasWeights


def layout_of(model: object) -> Layout:
    """The layout Keras writes for ``model``."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(io.BytesIO(), "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
        return read_layout(file)


def main() -> None:
    layouts = {spec.name: layout_of(spec.build()) for spec in REGISTRY.values()
               if isinstance(spec.weights, KerasWeights)}
    target = Path(__file__).resolve().parents[1] / "data" / LAYOUTS_FILE
    target.write_text(json.dumps(layouts, separators=(",", ":")) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
