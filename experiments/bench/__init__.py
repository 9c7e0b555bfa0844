"""Speed: the training step against its variants, what more seeds cost, the Keras
recorder's cost."""
