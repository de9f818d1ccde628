"""Image classification with pretrained ImageNet models; no web framework in here.

>>> from classifier import Classifier, Settings
>>> Classifier(Settings.from_env()).classify(open("cat.jpg", "rb").read()).predictions
"""

from .config import Settings
from .errors import ClassifierError
from .options import Options, PredictRequest, Upload
from .results import Answer, Classification, ImageResult
from .service import Classifier

__all__ = ["Answer", "Classification", "Classifier", "ClassifierError", "ImageResult", "Options", "PredictRequest",
           "Settings", "Upload"]
