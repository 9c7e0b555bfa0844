"""Datasets as in-memory uint8 arrays, and tf.data pipelines over them.

- ``digits``: the 1797 real 8x8 handwritten digits that ship inside scikit-learn,
  resized (bilinear) to ``image_size`` x ``image_size`` x 3 and split
  deterministically (stratified, seeded) into train and test. No download.
- ``stl10``: STL-10 through the real tensorflow-datasets ``stl10`` builder (train
  5000, test 8000), images /255 like the article. Offline: point ``stl10_archive``
  at a local ``stl10_binary.tar.gz`` (it becomes tfds's manual_dir).
"""

import collections
import os

import numpy as np
import tensorflow as tf

DATASETS = ("digits", "stl10")
STL10_ARCHIVE_NAME = "stl10_binary.tar.gz"
STL10_ARCHIVE_BYTES = 2_640_397_119
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck")

Dataset = collections.namedtuple(
    "Dataset", ["name", "train_images", "train_labels", "test_images", "test_labels",
                "num_classes", "class_names"])
Dataset.__doc__ = "Images uint8 (N, H, W, 3), labels int32 (N,)."


class DataError(Exception):
    """The data cannot be had; the message says why and what to do."""


def load(name, *, data_dir=None, stl10_archive=None, image_size=None, test_fraction=0.3,
         seed=0):
    """Load a dataset by name. image_size: None keeps the native size (STL-10 96),
    digits default 32."""
    if name == "digits":
        return load_digits(image_size or 32, test_fraction=test_fraction, seed=seed)
    if name == "stl10":
        return load_stl10(data_dir=data_dir, stl10_archive=stl10_archive, image_size=image_size)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def load_digits(image_size=32, test_fraction=0.3, seed=0):
    """scikit-learn's digits (values 0..16), scaled to 0..255, resized, grey to RGB."""
    from sklearn import datasets as sk_datasets
    from sklearn.model_selection import train_test_split

    bunch = sk_datasets.load_digits()
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)
    resized = tf.image.resize(images[..., None], [image_size, image_size], method="bilinear")
    resized = np.clip(np.rint(resized.numpy()), 0, 255).astype(np.uint8)
    rgb = np.repeat(resized, 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(
        rgb, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    return Dataset("digits", train_x, train_y, test_x, test_y, 10,
                   tuple(str(i) for i in range(10)))


def check_stl10_archive(path):
    """Refuse a missing, truncated or wrong archive with a message naming it."""
    if not os.path.exists(path):
        raise DataError(f"--stl10_archive {path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"--stl10_archive {path}: is a directory, expected the file "
                        f"{STL10_ARCHIVE_NAME}")
    if os.path.basename(path) != STL10_ARCHIVE_NAME:
        raise DataError(f"--stl10_archive {path}: tfds expects the file to be named "
                        f"{STL10_ARCHIVE_NAME}")
    size = os.path.getsize(path)
    if size != STL10_ARCHIVE_BYTES:
        what = "truncated" if size < STL10_ARCHIVE_BYTES else "not the STL-10 archive"
        raise DataError(f"--stl10_archive {path}: {size} bytes, expected {STL10_ARCHIVE_BYTES} "
                        f"({what}); download it again from the STL-10 page")
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            raise DataError(f"--stl10_archive {path}: not a gzip file")


def _stl10_split(builder, split):
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    images, labels = [], []
    for image, label in ds.batch(1000).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def load_stl10(data_dir=None, stl10_archive=None, image_size=None):
    """STL-10 via tfds (train 5000, test 8000), in file order (the article did not shuffle)."""
    import tensorflow_datasets as tfds

    download_config = None
    if stl10_archive:
        check_stl10_archive(stl10_archive)
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.path.dirname(os.path.abspath(stl10_archive)), try_download_gcs=False)
    builder = tfds.builder("stl10", data_dir=data_dir)
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as error:  # tfds raises many kinds; all mean "not available"
        raise DataError(
            f"STL-10 could not be prepared ({type(error).__name__}: {str(error)[:200]}). "
            f"Download {STL10_ARCHIVE_NAME} (2.6 GB) from the STL-10 page and pass "
            f"--stl10_archive=/path/to/{STL10_ARCHIVE_NAME}") from error
    train_x, train_y = _stl10_split(builder, "train")
    test_x, test_y = _stl10_split(builder, "test")
    if image_size and image_size != train_x.shape[1]:
        def resize(x):
            out = tf.image.resize(x, [image_size, image_size], method="bilinear").numpy()
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        train_x, test_x = resize(train_x), resize(test_x)
    return Dataset("stl10", train_x, train_y, test_x, test_y, 10, STL10_CLASSES)


def batches(images, labels, batch_size, *, dtype=tf.float32, shuffle_seed=None, epoch=0,
            drop_remainder=True):
    """A tf.data pipeline of (images / 255 as ``dtype``, labels int32). With shuffle_seed,
    the order of epoch ``epoch`` is a fixed permutation (so a resumed run sees the same
    batches); without, the file order (the article's)."""
    if shuffle_seed is not None:
        order = np.random.default_rng([shuffle_seed, epoch]).permutation(len(labels))
        images, labels = images[order], labels[order]
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (tf.cast(x, dtype) / 255.0, tf.cast(y, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)
