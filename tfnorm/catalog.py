"""What the command line can name, and check, before TensorFlow is imported: the
datasets (and digits' per-class training set), the STL-10 archive, the optimizers. No
TensorFlow here (``tfnorm.data`` and ``tfnorm.optimizers`` build the things these names
stand for); the schemes have their own registry, ``tfnorm.schemes``.
"""

import math
import os

from tfnorm.errors import ConfigError, DataError  # noqa: F401  (raised here, caught by name)

DATASETS = ("digits", "stl10")
# Images in each (train and test): what a run holds in memory.
DATASET_IMAGES = {"digits": 1797, "stl10": 13000}
# Digits' classes and the size of its smallest class (174 images of 8): the most
# --train_per_class can take (tests check both against scikit-learn).
DIGITS_CLASSES = 10
DIGITS_SMALLEST_CLASS = 174
STL10_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_ARCHIVE_NAME = "stl10_binary.tar.gz"
STL10_ARCHIVE_BYTES = 2_640_397_119
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck")
_GZIP_MAGIC = b"\x1f\x8b"

OPTIMIZERS = ("sgd", "momentum", "adam", "article_adam")

# The article's network: six 3x3 convolutions, hidden width 16 (--groups must divide it).
ARTICLE_WIDTH = 16
ARTICLE_DEPTH = 6


def article_strides(depth):
    """The article's strides at ``depth`` conv layers: 2 for the first min(4, depth - 1),
    then 1 (at its depth 6: 2, 2, 2, 2, 1, 1)."""
    return tuple(2 if i < min(4, depth - 1) else 1 for i in range(depth))


ARTICLE_STRIDES = article_strides(ARTICLE_DEPTH)


def check_train_per_class(config):
    """--train_per_class: digits only, not with --train_limit, at most the smallest class,
    and whole batches: in the file order the same trailing images would never be trained."""
    per_class = config["train_per_class"]
    if per_class == 0:
        return
    flag = f"--train_per_class={per_class}"
    if per_class < 0 or per_class > DIGITS_SMALLEST_CLASS:
        raise ConfigError(f"{flag}: must be 0 (off) or 1 to {DIGITS_SMALLEST_CLASS} "
                          "(the smallest digits class)")
    if config["dataset"] != "digits":
        raise ConfigError(f"{flag}: only with --dataset=digits")
    if config["train_limit"]:
        raise ConfigError(f"{flag}: not with --train_limit (it chooses the training set)")
    images, batch = DIGITS_CLASSES * per_class, config["batch_size"]
    if images % batch:
        step = batch // math.gcd(batch, DIGITS_CLASSES)
        raise ConfigError(f"{flag}: {images} training images are not whole batches of "
                          f"{batch} (the last {images % batch} would never be trained); use "
                          f"a multiple of {step}")


def one_line(error, limit=300):
    """``Type: message`` of a foreign exception on one line, cut to ``limit`` characters."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:limit]


def how_to_get_stl10():
    return (f"download {STL10_ARCHIVE_NAME} (2.6 GB) from {STL10_URL} and pass "
            f"--stl10_archive=/path/to/{STL10_ARCHIVE_NAME}, or use --dataset=digits")


def check_stl10_archive(path, what="--stl10_archive"):
    """Refuse a missing, misnamed, truncated or non-gzip archive with one line naming
    ``what`` (the flag, by default) and the path. Reads two bytes, so it costs nothing."""
    prefix = f"{what} {path}"
    if not os.path.exists(path):
        raise DataError(f"{prefix}: no such file; {how_to_get_stl10()}")
    if os.path.isdir(path):
        raise DataError(f"{prefix}: is a directory, expected the file {STL10_ARCHIVE_NAME}")
    if os.path.basename(path) != STL10_ARCHIVE_NAME:
        raise DataError(f"{prefix}: tfds only finds the archive under its own name; rename "
                        f"it to {STL10_ARCHIVE_NAME}")
    size = os.path.getsize(path)
    if size != STL10_ARCHIVE_BYTES:
        what = ("truncated: an interrupted download?" if size < STL10_ARCHIVE_BYTES
                else "too large: not the STL-10 archive")
        raise DataError(f"{prefix}: {size:,} bytes, expected {STL10_ARCHIVE_BYTES:,} ({what}); "
                        f"download it again from {STL10_URL}")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_GZIP_MAGIC))
    except OSError as error:
        raise DataError(f"{prefix}: cannot be read ({error.strerror})") from error
    if magic != _GZIP_MAGIC:
        raise DataError(f"{prefix}: not a gzip file; download it again from {STL10_URL}")
