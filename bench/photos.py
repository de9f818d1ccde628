"""Real photos with known right answers that come with the test requirements (scikit-image's
and matplotlib's sample data), for the tests and for benchmarks that want more than one photo."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import skimage.data

PHOTOS = {
    "chelsea": Path(skimage.data.__file__).parent / "chelsea.png",
    "coffee": Path(skimage.data.__file__).parent / "coffee.png",
    "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
}
