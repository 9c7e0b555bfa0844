"""tfnorm: normalization schemes with every gradient written by hand, in TensorFlow 2.

Public API: ``SCHEMES``, ``article_network``, ``Network`` (see ``tfnorm.network``).
"""

from tfnorm.network import (SCHEMES, Backprop, Block, LayerGradients, Network, WeightLayer,
                            article_network, check_scheme, mlp_network)
from tfnorm.optimizers import make_optimizer

__all__ = ["SCHEMES", "Backprop", "Block", "LayerGradients", "Network", "WeightLayer",
           "article_network", "check_scheme", "mlp_network", "make_optimizer"]
