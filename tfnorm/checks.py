"""Input checks that fail before any work, with a message naming the problem."""

import tensorflow as tf


def require_rank(x, rank, what):
    """Raise ValueError unless ``x`` has a known rank in ``rank`` (an int or a tuple)."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    actual = x.shape.rank
    if actual is None or actual not in ranks:
        wanted = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{what} must have rank {wanted}, got shape {x.shape}")


def require_padding(padding):
    padding = str(padding).upper()
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    return padding


def require_divides(groups, channels, what):
    if groups <= 0 or channels % groups:
        raise ValueError(
            f"{what}: the group count {groups} does not divide the {channels} channels")


def require_batch_above_one(x, what):
    """Batch statistics of one example are meaningless: refuse them (static shape if known)."""
    batch = x.shape[0]
    if batch is not None:
        if batch < 2:
            raise ValueError(
                f"{what} in training needs a batch of at least 2 examples, got a batch of {batch}")
        return []
    return [tf.debugging.assert_greater_equal(
        tf.shape(x)[0], 2,
        message=f"{what} in training needs a batch of at least 2 examples")]
