"""Image classification with pretrained ImageNet models; no web framework in here.

>>> from classifier import Classifier, Settings
>>> Classifier(Settings.from_env()).classify(open("cat.jpg", "rb").read()).predictions
"""

from .config import Settings
from .errors import ClassifierError
from .service import Classification, Classifier, ManyClassifications, ManyImagesRequest, PredictRequest, Upload

__all__ = ["Classification", "Classifier", "ClassifierError", "ManyClassifications", "ManyImagesRequest",
           "PredictRequest", "Settings", "Upload"]
