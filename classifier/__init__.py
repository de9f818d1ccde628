"""Image classification with pretrained ImageNet models: the library, its web app (``web``) and
command line (``cli``), in layers (docs/architecture.md).

>>> from classifier import Classifier, Settings
>>> Classifier(Settings.from_env()).classify(open("cat.jpg", "rb").read()).predictions
"""

from classifier.config import Settings
from classifier.errors import ClassifierError
from classifier.serving.options import Options, PredictRequest, Upload
from classifier.serving.results import Answer, Classification, ImageResult
from classifier.serving.service import Classifier

__all__ = ["Answer", "Classification", "Classifier", "ClassifierError", "ImageResult", "Options", "PredictRequest",
           "Settings", "Upload"]
