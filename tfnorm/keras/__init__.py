"""The Keras bridge: tfnorm's schemes as Keras 3 layers with the hand-written gradients
(``tfnorm.keras.layers``), and the article's four panels for any Keras model
(``tfnorm.keras.panels``). ``import tfnorm`` does not load it (nor TensorFlow); ``import
tfnorm.keras`` does.

This package is the one place under ``tfnorm/`` where autodiff is allowed: the layers hand
TensorFlow their backward through one hook, and the panel callback observes a model's
gradients with a tape (``tests/test_no_autodiff.py`` names it as the only exemption).
"""

from tfnorm.keras.article import StatelessNormal, article_model
from tfnorm.keras.layers import (Normalization, WeightNormalization, initialize_from_batch,
                                 weight_layer)
from tfnorm.keras.panels import PanelRecorder
from tfnorm.schemes import SCHEMES

__all__ = ["SCHEMES", "Normalization", "PanelRecorder", "StatelessNormal", "WeightNormalization",
           "article_model", "initialize_from_batch", "weight_layer"]
