"""What a training step measures per layer: the names and order of the statistics and
histograms the step computes (``tfnorm.training``) and a run records (``tfnorm.run.records``
writes them as columns and arrays). No TensorFlow here.
"""

# Columns of the per-step layer statistics, in order (metrics.csv: their epoch means):
#   nonzero_grad_frac   fraction of the weight gradient's entries that are exactly non-zero
#   nearzero_grad_frac  fraction with |g| <= NEARZERO_TAU * RMS(g) (exact zeros included)
#   *_norm              the Euclidean norms of the weight gradient, the gradient passed to
#                       the previous layer, the weights before the step, the update
#   update_freq         fraction of the weights whose update this step is above
#                       NEARZERO_TAU * RMS(update) (1 - the update's near-zero fraction)
LAYER_STATS = ("nonzero_grad_frac", "nearzero_grad_frac", "weight_grad_norm",
               "passed_grad_norm", "weights_norm", "update_norm", "update_freq")
# Per-layer columns the driver computes once per epoch, after LAYER_STATS:
#   weight_movement     ||W_e - W_(e-1)|| / ||W_(e-1)||, W the layer's effective weights (the
#                       kernel it applies: g v/||v|| under weight norm) at the end of epochs
EPOCH_STATS = ("weight_movement",)
# The four quantities of the article's panels, in panel order.
QUANTITIES = ("weight_gradient", "passed_gradient", "weights", "update")
# Summary statistics stored beside each histogram (nearzero_frac as nearzero_grad_frac).
SUMMARY_STATS = ("mean", "std", "min", "max", "norm", "nonzero_frac", "nearzero_frac")
DEFAULT_BINS = 50  # the article's histograms
# "Near zero": |x| <= NEARZERO_TAU * RMS(x), RMS(x) = sqrt(mean(x^2)) over the layer's
# entries. What the article's 50-bin histogram over [min, max] shows as a spike at 0 is
# its bin holding 0, (max - min) / 50 wide: entries within about (max - min) / 100 of 0.
# Over the 810 layers' weight gradients recorded by `make demo`'s runs before this
# measure existed (9 schemes x 5 seeds x epochs 1, 5, 10 x 6 layers), that half-width is
# 0.116 RMS (median; 10th-90th percentile 0.058-0.176; experiments.article.nonzero's
# nonzero_tau.csv). 0.1 is the round number there, fixed from the histograms' geometry
# before any fraction or verdict was computed on it.
NEARZERO_TAU = 0.1
# The magnitude histograms span at most this many decades below a quantity's largest
# |entry|; smaller non-zero entries are counted in the first bin.
MAGNITUDE_DECADES = 12


def is_evaluated_epoch(epoch, epochs, eval_every):
    """Every ``eval_every``-th epoch and the last have a test pass."""
    return epoch % eval_every == 0 or epoch == epochs
