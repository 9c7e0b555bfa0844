"""The article's sentences, each with the claims that test it or the reason it cannot be
tested here: the one list experiments.article.claims decides, in every setting it is given.

A sentence is tested by the question it asks (tfnorm.analysis.verdicts): "more non-zero gradients"
is a difference, "exactly the same number of parameters" an equivalence within a margin
stated here, "struggles to pass 60%" a threshold. Per-layer measures (runs.csv, written by
experiments.article.summary):

    nonzero_<i>      the fraction of layer i's weight gradient that is not exactly 0
    nearzero_<i>     the fraction within records.NEARZERO_TAU of the layer's RMS gradient
                     (what a histogram's spike at 0 shows; fewer means more non-zero)
    update_freq_<i>  the fraction of layer i's weights whose step is above a small share
                     of the layer's RMS step
    movement_<i>     ||W_e - W_(e-1)|| / ||W_(e-1)|| per epoch, averaged over the epochs

and the derived ones of ``derived``. A sentence about over-fitting is decided only where the
setting over-fits (``OVERFITS``: batch norm's train-minus-test gap above 0.2); elsewhere its
rows are computed and labelled as not deciding it.
"""

import collections
import math

from tfnorm.analysis import verdicts

LAYERS = range(1, 7)
SCHEMES = ("none", "batch", "layer", "instance", "boxcox")
NORMALIZED = ("batch", "layer", "instance")
# His count of the statistics each scheme computes per layer (REFERENCE.md), fewest first:
# batch 16 (per channel) < layer 20 (per sample) < instance 320 (per sample and channel).
BY_STATISTICS = ("batch", "layer", "instance")
# The over-fitting gap of a run: final train accuracy minus final test accuracy.
GAP = "final_gap"
# Layers 2-4's mean movement minus that of layers 1, 5 and 6 (negative: they move less).
MIDDLE_MOVEMENT = "movement_2to4_minus_others"
OVERFIT_GAP = 0.2
OVERFITS = verdicts.threshold("the setting over-fits: batch norm's final train minus final "
                              "test accuracy is above 0.2", GAP, "batch", OVERFIT_GAP, +1)
# Parameter counts are whole numbers: half a parameter is the margin of "exactly the same".
SAME_COUNT = 0.5

Sentence = collections.namedtuple("Sentence", ["text", "needs_overfitting", "untested"])
Sentence.__doc__ = """One sentence of the article: ``needs_overfitting`` if it speaks of
test accuracy or over-fitting (decided only where the setting over-fits); ``untested``: the
part no claim tests, and why ("" if every part is tested)."""

STILL = Sentence("Simply put after few iterations the weights are not changing much, especially "
                 "layer two, three, and four.", False,
                 "'not changing much' has no scale; tested: layers 2-4 move less than layers "
                 "1, 5, 6 (and batch norm's movement against none's is the BN sentence below)")
BN_NONZERO = Sentence("Right away we can see one dramatic difference between the network that "
                      "did not have any normalization scheme, Number of Non-Zero Gradients, "
                      "for each layer.", False, "")
BN_REASON = Sentence("This property of batch normalization, which increases the number of "
                     "non-zero gradients, is the reason why training accelerates for deep "
                     "neural networks.", False,
                     "'is the reason': no run here changes the non-zero fraction alone, so the "
                     "cause is not isolated; tested: batch trains faster than none (its more "
                     "non-zero gradients are the sentence before)")
BN_MOVEMENT = Sentence("And when we view how weights change over time, we can see that the "
                       "histogram has more overall movement.", False, "")
LN_SIMILAR = Sentence("We can observe a similar phenomenon when we used layer normalization "
                      "between every layer.", False, "")
FREQUENT = Sentence("As the number of non-zero gradients increases, the update of weights for "
                    "each layer becomes more frequent.", False,
                    "tested on the schemes with more non-zero gradients than none, scheme "
                    "against none; not as a dose-response across schemes")
INSTANCE = Sentence("Instance normalization standardizes every image or feature map, and due "
                    "to this, I personally believe that the number of the non-zero gradient is "
                    "maximized when compared to other normalization schemes.", False, "")
BOXCOX_MORE = Sentence("[Box-Cox:] When compared to the network that did not have any "
                       "normalization scheme we can see that there are more non-zero elements "
                       "in the gradient respect to each weight.", False, "")
BOXCOX_ZEROS = Sentence("However, when compared to any other normalization scheme we can see "
                        "that we still have a lot of zeros in our gradient.", False, "")
PARAMETERS = Sentence("every single one of these networks (with/without) normalization schemes "
                      "have exactly the same number of parameters.", False, "")
CAPACITY = Sentence("Meaning their learning capacity is exactly the same.", False,
                    "capacity is not measured by any run; equal parameter counts do not "
                    "imply it")
FAST = Sentence("When we use a normalization scheme such as batch/layer/instance normalization "
                "we can achieve +95% accuracy on training images by 130th epoch.", False, "")
STRUGGLE = Sentence("Meanwhile, the network with box-cox transformation as well as the network "
                    "without any normalization scheme struggles even to pass +60% accuracy.",
                    False, "")
TEST = Sentence("From the above plot we can conclude that surprisingly, the network without any "
                "normalization scheme did the best.", True, "")
IMPRESSIVE = Sentence("When taking into account that we have much more testing images compared "
                      "to training images this is somewhat an impressive result.", True,
                      "a judgement of his STL-10 number (55% of 8000 test images), not a "
                      "comparison a run can make")
PATTERN_TEST = Sentence("we can see a pattern emerging, as the number of parameters in which we "
                        "calculate the mean and the standard deviation decreases, testing "
                        "accuracy increases", True, "")
PATTERN_GAP = Sentence("As the number of parameters, we are calculating the mean and standard "
                       "deviation increases, the model tends to over-fit.", True, "")
WHY = Sentence("Why? Well, I am not an expert in machine learning, but clear speculation is the "
               "gradients.. More precisely, non-zero gradients.", True,
               "a causal speculation (non-zero gradients cause the over-fitting); no run "
               "here varies the non-zero fraction alone")
# In the article's order.
SENTENCES = (STILL, BN_NONZERO, BN_REASON, BN_MOVEMENT, LN_SIMILAR, FREQUENT, INSTANCE,
             BOXCOX_MORE, BOXCOX_ZEROS, PARAMETERS, CAPACITY, FAST, STRUGGLE, TEST, IMPRESSIVE,
             PATTERN_TEST, PATTERN_GAP, WHY)


def _more_nonzero(sentence, a, b):
    """a's weight gradients have more non-zero entries than b's, at every layer: on the
    exact count and on the near-zero share (fewer near zero)."""
    difference = verdicts.difference
    return ([difference(sentence.text, f"nonzero_{i}", a, b, +1) for i in LAYERS]
            + [difference(sentence.text, f"nearzero_{i}", a, b, -1) for i in LAYERS])


def article_claims():
    """Every claim the article's sentences make, in the article's order."""
    difference, threshold = verdicts.difference, verdicts.threshold
    claims = [threshold(STILL.text, MIDDLE_MOVEMENT, "none", 0.0, -1)]
    claims += _more_nonzero(BN_NONZERO, "batch", "none")
    claims += [difference(BN_REASON.text, "epoch_to_95", "batch", "none", -1),
               difference(BN_REASON.text, "final_train_acc", "batch", "none", +1)]
    claims += [difference(BN_MOVEMENT.text, f"movement_{i}", "batch", "none", +1)
               for i in LAYERS]
    claims += _more_nonzero(LN_SIMILAR, "layer", "none")
    claims += [difference(FREQUENT.text, f"update_freq_{i}", scheme, "none", +1)
               for scheme in NORMALIZED for i in LAYERS]
    for other in ("batch", "layer", "boxcox", "none"):
        claims += _more_nonzero(INSTANCE, "instance", other)
    claims += _more_nonzero(BOXCOX_MORE, "boxcox", "none")
    for other in NORMALIZED:
        claims += _more_nonzero(BOXCOX_ZEROS, other, "boxcox")
    claims += [verdicts.equivalence(PARAMETERS.text, "parameters", scheme, "none", SAME_COUNT)
               for scheme in ("batch", "layer", "instance", "boxcox")]
    for scheme in NORMALIZED:
        claims += [threshold(FAST.text, "epoch_to_95", scheme, 131, -1),  # by epoch 130
                   difference(FAST.text, "epoch_to_95", scheme, "none", -1),
                   difference(FAST.text, "final_train_acc", scheme, "none", +1)]
    claims += [threshold(STRUGGLE.text, "final_train_acc", scheme, 0.6, -1)
               for scheme in ("boxcox", "none")]
    claims += [difference(STRUGGLE.text, "final_train_acc", scheme, weak, +1)
               for scheme in NORMALIZED for weak in ("boxcox",)]
    claims += [difference(TEST.text, metric, "none", scheme, +1)
               for metric in ("final_test_acc", "best_test_acc")
               for scheme in ("batch", "layer", "instance", "boxcox")]
    pairs = list(zip(BY_STATISTICS, BY_STATISTICS[1:]))
    claims += [difference(PATTERN_TEST.text, "final_test_acc", fewer, more, +1)
               for fewer, more in pairs]
    claims += [difference(PATTERN_GAP.text, GAP, fewer, more, -1) for fewer, more in pairs]
    return claims


def overfit_claims():
    """His sentences about test accuracy and over-fitting, and his train-accuracy ones, as
    decided in an over-fitting regime (experiments.article.overfit)."""
    wanted = {FAST.text, STRUGGLE.text, TEST.text, PATTERN_TEST.text, PATTERN_GAP.text}
    return [c for c in article_claims() if c.sentence in wanted
            and not (c.sentence == STRUGGLE.text and c.kind == verdicts.DIFFERENCE)]


def sentence_of(text):
    """The Sentence whose text is ``text``."""
    return next(s for s in SENTENCES if s.text == text)


def derived(row):
    """``row`` (one run of runs.csv, numbers as floats) with GAP and MIDDLE_MOVEMENT added
    (NaN where a measure it needs is missing)."""
    nan = float("nan")
    gap = row.get("final_train_acc", nan) - row.get("final_test_acc", nan)
    middle = [row.get(f"movement_{i}", nan) for i in (2, 3, 4)]
    outer = [row.get(f"movement_{i}", nan) for i in (1, 5, 6)]
    movement = sum(middle) / 3 - sum(outer) / 3
    return dict(row, **{GAP: gap, MIDDLE_MOVEMENT: movement if math.isfinite(movement)
                        else nan})


def with_derived(runs):
    """``runs`` ({scheme: {seed: row}}) with each row's derived measures added."""
    return {scheme: {seed: derived(row) for seed, row in seeds.items()}
            for scheme, seeds in runs.items()}
