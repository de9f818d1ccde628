"""Image classification with pretrained ImageNet models; no web framework in here.

>>> from classifier import Classifier, Settings
>>> Classifier(Settings.from_env()).classify(open("cat.jpg", "rb").read()).predictions
"""

from .config import Settings
from .errors import ClassifierError
from .service import Classification, Classifier, PredictRequest

__all__ = ["Classification", "Classifier", "ClassifierError", "PredictRequest", "Settings"]
