"""Datasets as in-memory uint8 arrays, and tf.data pipelines over them.

- ``digits``: the 1797 real 8x8 handwritten digits that ship inside scikit-learn,
  resized (bilinear) to ``image_size`` x ``image_size`` x 3 and split
  deterministically (stratified, seeded) into train and test. No download. With
  ``train_per_class`` N, a small training set instead (``stratified_subset``: N images of
  each class drawn with the seed, in file order) and every other image as the test set.
- ``stl10``: STL-10 through the real tensorflow-datasets ``stl10`` builder (train
  5000, test 8000), in the order of the original binary files (the article did not
  shuffle); ``batches`` divides by 255 like the article.

Getting STL-10. tfds prepares it once into ``data_dir`` (default ``~/tensorflow_datasets``
or $TFDS_DATA_DIR) from the archive ``stl10_binary.tar.gz`` (2,640,397,119 bytes), found in
this order: ``stl10_archive`` (any folder; it becomes tfds's manual_dir), tfds's default
manual_dir ``<data_dir>/downloads/manual``, or, only with ``download=True``, a download from
the STL-10 page. By default nothing is downloaded: with no prepared copy and no archive the
loader raises a DataError saying how to get the archive (a 2.6 GB download should be a
decision, and tests must never reach the network). Once prepared, loading needs neither
the archive nor the network. Preparing needs disk for the extracted binaries (3.1 GB,
mostly the 100000 unlabelled images, which tfds prepares too) and for tfds's own copy.

Archive checks. ``check_stl10_archive`` looks at the name, the exact byte size and the gzip
magic: it runs before any work and costs nothing. It does not compute the sha256 (about
2.6 GB to read, many seconds per run): tfds itself computes it, against the checksum it
registers for the STL-10 URL, when it prepares from the archive, which happens once;
a corrupt archive of the right size then fails with a DataError saying so.
"""

import collections
import contextlib
import io
import logging as python_logging
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from tfnorm.catalog import (DATASETS, STL10_ARCHIVE_BYTES, STL10_ARCHIVE_NAME,  # noqa: F401
                            STL10_CLASSES, STL10_URL, DataError, how_to_get_stl10,
                            one_line, check_stl10_archive)

# Resizing in chunks bounds the float32 copy tf.image.resize makes (13000 STL-10 images at
# once would need 1.4 GB).
_RESIZE_CHUNK = 1000

Dataset = collections.namedtuple(
    "Dataset", ["name", "train_images", "train_labels", "test_images", "test_labels",
                "num_classes", "class_names"])
Dataset.__doc__ = "Images uint8 (N, H, W, 3), labels int32 (N,) in 0..num_classes-1."


def load(name, *, data_dir=None, stl10_archive=None, image_size=None, test_fraction=0.3,
         seed=0, train_per_class=0, download=False):
    """Load a dataset by name (one of DATASETS).

    image_size: None keeps the native size (STL-10 96, digits 32). test_fraction, seed,
    train_per_class: the digits split (see load_digits). data_dir, stl10_archive,
    download: STL-10 only (see load_stl10).
    """
    if name == "digits":
        return load_digits(32 if image_size is None else image_size,
                           test_fraction=test_fraction, seed=seed,
                           train_per_class=train_per_class)
    if name == "stl10":
        return load_stl10(data_dir=data_dir, stl10_archive=stl10_archive,
                          image_size=image_size, download=download)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _check_image_size(image_size):
    is_integer = isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool)
    if image_size is not None and (not is_integer or image_size < 1):
        raise DataError(f"image_size {image_size!r}: expected a positive integer")


def _resize(images, image_size):
    """uint8 or float 0..255 (N, H, W, C) -> uint8 (N, image_size, image_size, C),
    bilinear; shrinking is antialiased (an area filter), since plain bilinear would alias
    a 96 -> 32 reduction."""
    if images.shape[1:3] == (image_size, image_size):
        return np.clip(np.rint(images), 0, 255).astype(np.uint8)
    antialias = image_size < images.shape[1]
    chunks = []
    for start in range(0, len(images), _RESIZE_CHUNK):
        resized = tf.image.resize(images[start:start + _RESIZE_CHUNK],
                                  [image_size, image_size], method="bilinear",
                                  antialias=antialias)
        chunks.append(np.clip(np.rint(resized.numpy()), 0, 255).astype(np.uint8))
    if not chunks:
        return np.zeros((0, image_size, image_size, images.shape[-1]), np.uint8)
    return np.concatenate(chunks)


def stratified_subset(labels, per_class, seed):
    """Indices of ``per_class`` entries of each class of ``labels``, ascending (the file
    order). Class c's are the first ``per_class`` of a permutation of its indices drawn
    from numpy's child stream (c,) of ``seed`` (``SeedSequence(seed, spawn_key=(c,))``,
    a stream of its own: no shuffle order, which takes (seed, epoch), shares it). So a
    seed names one subset, and a smaller subset of the same seed lies inside a larger one."""
    labels = np.asarray(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if per_class > members.size:
            raise DataError(f"train_per_class {per_class}: class {label} has only "
                            f"{members.size} images")
        stream = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(label),)))
        chosen.append(stream.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def load_digits(image_size=32, test_fraction=0.3, seed=0, train_per_class=0):
    """scikit-learn's 1797 digits (values 0..16), scaled to 0..255, resized, grey to RGB,
    split stratified by class with ``seed`` (same seed, same split).

    train_per_class N > 0 (test_fraction is then unused): the training set is N images of
    each class (``stratified_subset`` of ``seed``), every other image is the test set,
    both in scikit-learn's file order."""
    from sklearn import datasets as sk_datasets
    from sklearn.model_selection import train_test_split

    _check_image_size(image_size)
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction {test_fraction!r}: expected a number in (0, 1)")
    bunch = sk_datasets.load_digits()
    # Scaled as floats and rounded once, after the resize.
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)
    rgb = np.repeat(_resize(images[..., None], image_size), 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    if train_per_class:
        train = np.zeros(len(labels), bool)
        train[stratified_subset(labels, train_per_class, seed)] = True
        return Dataset("digits", rgb[train], labels[train], rgb[~train], labels[~train], 10,
                       tuple(str(i) for i in range(10)))
    train_x, test_x, train_y, test_y = train_test_split(
        rgb, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    return Dataset("digits", train_x, train_y, test_x, test_y, 10,
                   tuple(str(i) for i in range(10)))


class _DropTfdsChatter(python_logging.Filter):
    """Drops tfds's own info and warning lines ("Reusing dataset...", "Variant folder ...
    has no dataset_info.json" for a data_dir not prepared yet): what goes wrong reaches the
    user as a DataError instead. tfds's errors still pass."""

    def filter(self, record):
        from_tfds = f"{os.sep}tensorflow_datasets{os.sep}" in (record.pathname or "")
        return not (from_tfds and record.levelno < python_logging.ERROR)


@contextlib.contextmanager
def _quiet_tfds():
    """tfds's info and warning logs and its prints to stdout silenced for the block (what it printed
    is logged at debug level), and its progress bars switched off for good: the driver
    draws its own, and a bar per split would drown the log."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    log_filter = _DropTfdsChatter()
    absl_logger = python_logging.getLogger("absl")
    absl_logger.addFilter(log_filter)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        absl_logger.removeFilter(log_filter)
        if printed.getvalue().strip():
            logging.debug("tfds: %s", printed.getvalue().strip())


def _file_order(num_examples, split):
    """The permutation tfds applied when it wrote the split: ``stored[k] ==
    original[order[k]]``.

    The stl10 builder keys example i of each binary file by i, and tfds writes a split
    sorted by the md5 of its keys salted with the split name (tensorflow_datasets.core.
    hashing; tfds keeps this order stable within a dataset version). tests/test_data.py
    checks it on the real builder.
    """
    from tensorflow_datasets.core import hashing

    hasher = hashing.Hasher(split)
    return np.argsort([hasher.hash_key(index) for index in range(num_examples)],
                      kind="stable")


def _read_split(builder, split):
    """A whole split as arrays, decoded by tf.data in one batch; back in file order."""
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(builder.as_dataset(
        split=split, batch_size=-1, as_supervised=True, shuffle_files=False))
    if builder.info.disable_shuffling:
        return images, labels.astype(np.int32)
    order = _file_order(len(labels), split)
    file_images, file_labels = np.empty_like(images), np.empty(len(labels), np.int32)
    file_images[order] = images
    file_labels[order] = labels
    return file_images, file_labels


def _prepare_stl10(builder, stl10_archive, download):
    """Have tfds prepare STL-10 once, from the archive or, if allowed, a download."""
    import tensorflow_datasets as tfds

    data_dir = os.fspath(builder.data_dir_root)
    what = "--stl10_archive"
    if stl10_archive:
        manual_dir = os.path.dirname(os.path.abspath(stl10_archive))
    else:
        manual_dir = os.path.join(data_dir, "downloads", "manual")
        default_archive = os.path.join(manual_dir, STL10_ARCHIVE_NAME)
        if os.path.exists(default_archive):
            stl10_archive, what = default_archive, "the STL-10 archive in tfds's manual_dir"
            check_stl10_archive(stl10_archive, what)
        elif not download:
            raise DataError(f"STL-10 is not prepared in {data_dir} and no archive was given: "
                            f"{how_to_get_stl10()}")
    source = stl10_archive or STL10_URL
    logging.info("STL-10: preparing %s into %s (once; about 10 minutes on 2 cores)", source,
                 data_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    try:
        with _quiet_tfds():
            builder.download_and_prepare(download_config=config)
    except Exception as error:  # tfds raises many kinds; each means "not available"
        detail = one_line(error)
        if "checksum" in detail.lower() and stl10_archive:
            raise DataError(f"{what} {stl10_archive}: its sha256 is not the STL-10 "
                            f"archive's (a corrupt file); download it again from "
                            f"{STL10_URL}") from error
        raise DataError(f"STL-10 could not be prepared from {source} into {data_dir} "
                        f"({detail}); {how_to_get_stl10()}") from error


def load_stl10(data_dir=None, stl10_archive=None, image_size=None, download=False):
    """STL-10 via the tfds ``stl10`` builder: train 5000, test 8000 (the unlabelled
    100000 are prepared by tfds but never loaded), uint8 (N, 96, 96, 3) in file order,
    labels 0..9. image_size: resize (bilinear, antialiased) to a square of that side.
    download: let tfds fetch the archive from the STL-10 page when no prepared copy and no
    archive is there (off by default).

    Raises DataError, before any long work, when the archive is bad or STL-10 is neither
    prepared in data_dir nor obtainable (see the module docstring).
    """
    import tensorflow_datasets as tfds

    _check_image_size(image_size)
    if data_dir:
        data_dir = os.path.expanduser(data_dir)
    if stl10_archive:
        stl10_archive = os.path.expanduser(stl10_archive)
        check_stl10_archive(stl10_archive)
    started = time.perf_counter()
    with _quiet_tfds():
        builder = tfds.builder("stl10", data_dir=data_dir)
        prepared = builder.is_prepared()
    if not prepared:
        _prepare_stl10(builder, stl10_archive, download)
    try:
        with _quiet_tfds():
            train_x, train_y = _read_split(builder, "train")
            test_x, test_y = _read_split(builder, "test")
    except Exception as error:  # a damaged prepared copy: tfds raises many kinds
        raise DataError(f"STL-10 prepared in {builder.data_dir} cannot be read "
                        f"({one_line(error)}); delete that folder "
                        f"and run again to prepare it anew") from error
    if image_size:
        train_x, test_x = _resize(train_x, image_size), _resize(test_x, image_size)
    logging.info("STL-10: %d train, %d test images %s from %s in %.1f s", len(train_y),
                 len(test_y), "x".join(map(str, train_x.shape[1:])), builder.data_dir,
                 time.perf_counter() - started)
    return Dataset("stl10", train_x, train_y, test_x, test_y, 10, STL10_CLASSES)


def to_unit_range(images, dtype=tf.float32):
    """uint8 images as ``dtype`` divided by 255 (the article's scaling, no mean subtraction);
    images of any other dtype are taken as scaled already and only cast."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        # Divided in float64 and rounded once: in float32, exactly numpy's x / 255. In a compiled
        # step TF's graph optimizer turns a division by a constant into a multiplication
        # by its reciprocal, which in float32 is 1 ulp off for 126 of the 256 values.
        return tf.cast(tf.cast(images, tf.float64) / 255.0, dtype)
    return tf.cast(images, dtype)


def batches(images, labels, batch_size, *, dtype=tf.float32, shuffle_seed=None, epoch=0,
            drop_remainder=True):
    """A tf.data pipeline of (images (B, H, W, C) as ``to_unit_range`` gives them in
    ``dtype``, labels int32 (B,)).

    ``dtype=tf.uint8``: the images stay raw bytes, for a step that scales them itself
    (``tfnorm.training.Trainer`` does): a quarter of the bytes to move per batch and no
    conversion pass competing with the step for the CPU.
    With shuffle_seed, the order of epoch ``epoch`` is a fixed permutation of
    (shuffle_seed, epoch) (so a resumed run sees the same batches); without, the array
    order (the article's).
    """
    if shuffle_seed is not None:
        order = np.random.default_rng([shuffle_seed, epoch]).permutation(len(labels))
        images, labels = images[order], labels[order]
    ds = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if dtype != tf.uint8:
        ds = ds.map(lambda x, y: (to_unit_range(x, dtype), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)
