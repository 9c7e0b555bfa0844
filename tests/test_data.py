"""tfnorm.data: STL-10 through the real tfds builder on tiny fake files, digits, batches,
and the refusals. Every test runs with sockets refusing to connect."""

import logging
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import stl10_fixture
from stl10_fixture import fake_stl10_dir  # noqa: F401  (a pytest fixture)
from tfnorm import catalog, data

N_TRAIN, N_TEST, N_UNLABELLED = 8, 6, 2
SIDE = stl10_fixture.IMAGE_SIDE


@pytest.fixture(autouse=True)
def _offline():
    with stl10_fixture.no_network():
        yield


@pytest.fixture(scope="module")
def stl10(fake_stl10_dir):  # noqa: F811
    return data.load_stl10(data_dir=fake_stl10_dir)


@pytest.fixture
def download_attempts():
    """tfds's real download, replaced by one that records the attempt and fails."""
    attempts = []

    def refuse(self, resource):
        attempts.append(resource)
        raise ConnectionError("no network in tests")

    with mock.patch.object(tfds.download.DownloadManager, "_download", refuse):
        yield attempts


# ----------------------------------------------------------------------------
# STL-10 through the real tfds builder


def test_stl10_returns_the_written_pixels_and_labels_in_file_order(stl10):
    expected = stl10_fixture.stl10_arrays(N_TRAIN, N_TEST, N_UNLABELLED)
    assert stl10.name == "stl10"
    assert stl10.train_images.shape == (N_TRAIN, SIDE, SIDE, 3)
    assert stl10.test_images.shape == (N_TEST, SIDE, SIDE, 3)
    assert stl10.train_images.dtype == np.uint8 and stl10.train_labels.dtype == np.int32
    np.testing.assert_array_equal(stl10.train_images, expected.train_images)
    np.testing.assert_array_equal(stl10.train_labels, expected.train_labels)
    np.testing.assert_array_equal(stl10.test_images, expected.test_images)
    np.testing.assert_array_equal(stl10.test_labels, expected.test_labels)
    assert stl10.num_classes == 10 and stl10.class_names == stl10_fixture.CLASS_NAMES


def test_stl10_pixels_follow_the_binary_format_column_major(stl10, tmp_path):
    """Read the raw bytes by the STL-10 format itself (per image 3 channels, each 96
    columns of 96 rows), independently of the fixture's transpose."""
    folder = stl10_fixture.write_stl10_binaries(tmp_path, N_TRAIN, N_TEST, N_UNLABELLED)
    raw = np.fromfile(os.path.join(folder, "stl10_binary", "train_X.bin"), np.uint8)
    raw_labels = np.fromfile(os.path.join(folder, "stl10_binary", "train_y.bin"), np.uint8)
    image, row, col, channel = np.indices(stl10.train_images.shape)
    offset = image * 3 * SIDE * SIDE + channel * SIDE * SIDE + col * SIDE + row
    np.testing.assert_array_equal(stl10.train_images, raw[offset])
    # A transpose would be caught: the pattern is not symmetric.
    assert not np.array_equal(stl10.train_images, stl10.train_images.transpose(0, 2, 1, 3))
    assert raw_labels.min() == 1 and raw_labels.max() == 10
    np.testing.assert_array_equal(stl10.train_labels, raw_labels.astype(np.int32) - 1)


def test_stl10_split_sizes_in_tfds(fake_stl10_dir):  # noqa: F811
    builder = tfds.builder("stl10", data_dir=fake_stl10_dir)
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": N_TRAIN, "test": N_TEST, "unlabelled": N_UNLABELLED}


def test_stl10_resize_option(fake_stl10_dir, stl10):  # noqa: F811
    small = data.load("stl10", data_dir=fake_stl10_dir, image_size=24)
    assert small.train_images.shape == (N_TRAIN, 24, 24, 3)
    assert small.train_images.dtype == np.uint8
    expected = tf.image.resize(stl10.test_images, [24, 24], antialias=True).numpy()
    np.testing.assert_array_equal(small.test_images,
                                  np.clip(np.rint(expected), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(small.train_labels, stl10.train_labels)


def test_stl10_batches_are_divided_by_255(stl10):
    images, labels = next(iter(data.batches(stl10.train_images, stl10.train_labels, 4)))
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    np.testing.assert_allclose(images.numpy(), stl10.train_images[:4] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), stl10.train_labels[:4])


def _from_tfds(records):
    return [r.getMessage() for r in records
            if f"{os.sep}tensorflow_datasets{os.sep}" in r.pathname]


def test_stl10_loading_keeps_tfds_logging_quiet(fake_stl10_dir, caplog):  # noqa: F811
    with caplog.at_level(logging.INFO):
        data.load_stl10(data_dir=fake_stl10_dir)
    assert _from_tfds(caplog.records) == []
    assert any("STL-10: 8 train, 6 test images" in r.getMessage() for r in caplog.records)


def test_stl10_through_a_default_manual_dir_is_checked_first(tmp_path):
    """An archive in tfds's default manual_dir is used, so it is checked like the flag."""
    manual = tmp_path / "downloads" / "manual"
    archive = stl10_fixture.write_stl10_archive(manual / data.STL10_ARCHIVE_NAME)
    with pytest.raises(data.DataError, match="truncated") as error:
        data.load_stl10(data_dir=str(tmp_path), download=False)
    assert f"the STL-10 archive in tfds's manual_dir {archive}:" in str(error.value)


def test_damaged_prepared_copy_says_how_to_recover(tmp_path):
    with stl10_fixture.fake_stl10(tmp_path, n_train=4, n_test=3) as data_dir:
        dataset_dir = tfds.builder("stl10", data_dir=data_dir).data_dir
        (record,) = [name for name in os.listdir(dataset_dir) if "train.tfrecord" in name]
        with open(os.path.join(dataset_dir, record), "r+b") as f:
            f.truncate(100)
        with pytest.raises(data.DataError, match="cannot be read") as error:
            data.load_stl10(data_dir=data_dir)
    assert dataset_dir in str(error.value) and "delete that folder" in str(error.value)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------
# No STL-10: a clear error, never a download in tests, never other data


def test_stl10_without_data_or_archive_says_how_to_get_it(tmp_path, download_attempts,
                                                          caplog):
    with caplog.at_level(logging.INFO), pytest.raises(data.DataError) as error:
        data.load("stl10", data_dir=str(tmp_path))  # download=False by default
    assert _from_tfds(caplog.records) == []  # the DataError is the one line the user sees
    message = str(error.value)
    assert str(tmp_path) in message and "--stl10_archive" in message
    assert data.STL10_URL in message
    assert download_attempts == []


def test_stl10_failed_download_says_how_to_get_it(tmp_path, download_attempts):
    with pytest.raises(data.DataError) as error:
        data.load("stl10", data_dir=str(tmp_path), download=True)
    assert [str(getattr(r, "url", r)) for r in download_attempts] == [data.STL10_URL]
    message = str(error.value)
    assert "could not be prepared" in message and "ConnectionError" in message
    assert "--stl10_archive" in message and data.STL10_URL in message
    assert "\n" not in message
    assert not tfds.builder("stl10", data_dir=str(tmp_path)).is_prepared()


def test_bad_archive_is_refused_before_tfds_is_asked(tmp_path):
    archive = stl10_fixture.write_stl10_archive(tmp_path / data.STL10_ARCHIVE_NAME)
    with mock.patch.object(tfds, "builder", side_effect=AssertionError("tfds was asked")):
        with pytest.raises(data.DataError, match="truncated"):
            data.load_stl10(data_dir=str(tmp_path / "tfds"), stl10_archive=archive)


def test_archive_with_a_wrong_sha256_is_named(tmp_path, download_attempts):
    """The real tfds checksum validation, with the hash of a right-sized file faked (the
    real computation reads 2.6 GB)."""
    from tensorflow_datasets.core.download import checksums

    archive = _sparse_file(tmp_path / data.STL10_ARCHIVE_NAME, data.STL10_ARCHIVE_BYTES,
                           b"\x1f\x8b")
    wrong = checksums.UrlInfo(size=tfds.core.utils.Size(data.STL10_ARCHIVE_BYTES),
                              checksum="0" * 64, filename=data.STL10_ARCHIVE_NAME)
    with mock.patch.object(checksums, "compute_url_info", return_value=wrong):
        with pytest.raises(data.DataError, match="sha256") as error:
            data.load_stl10(data_dir=str(tmp_path / "tfds"), stl10_archive=archive)
    assert archive in str(error.value)
    assert download_attempts == []


def test_stl10_archive_flag_prepares_through_tfds_manual_dir(tmp_path, download_attempts):
    """The whole --stl10_archive path: tfds finds the archive in its folder (manual_dir),
    extracts the real .tar.gz and prepares it. Only the archive's size (ours is small) and
    its hash (tfds's registered one) are faked."""
    from tensorflow_datasets.core.download import checksums

    archive = stl10_fixture.write_stl10_archive(
        tmp_path / "archive" / data.STL10_ARCHIVE_NAME, n_train=4, n_test=3)
    (registered,) = tfds.builder_cls("stl10").url_infos.values()
    with mock.patch.object(catalog, "STL10_ARCHIVE_BYTES", os.path.getsize(archive)), \
            mock.patch.object(checksums, "compute_url_info", return_value=registered):
        loaded = data.load("stl10", data_dir=str(tmp_path / "tfds"), stl10_archive=archive)
    expected = stl10_fixture.stl10_arrays(n_train=4, n_test=3)
    np.testing.assert_array_equal(loaded.train_images, expected.train_images)
    np.testing.assert_array_equal(loaded.test_labels, expected.test_labels)
    assert download_attempts == []


# ----------------------------------------------------------------------------
# check_stl10_archive


def _sparse_file(path, size, head=b""):
    """A file of ``size`` bytes that takes no disk space beyond ``head``."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return str(path)


@pytest.mark.parametrize("case, pattern", [
    ("missing", "no such file"),
    ("directory", "is a directory"),
    ("misnamed", "rename it to stl10_binary.tar.gz"),
    ("truncated", "expected 2,640,397,119 \\(truncated"),
    ("too_large", "too large"),
    ("not_gzip", "not a gzip file"),
])
def test_check_stl10_archive_refuses(tmp_path, case, pattern):
    name = data.STL10_ARCHIVE_NAME
    if case == "missing":
        path = str(tmp_path / name)
    elif case == "directory":
        path = str(tmp_path / name)
        os.mkdir(path)
    elif case == "misnamed":
        path = _sparse_file(tmp_path / "stl10.tgz", data.STL10_ARCHIVE_BYTES, b"\x1f\x8b")
    elif case == "truncated":  # a real gzip tar of the right layout, just small
        path = stl10_fixture.write_stl10_archive(tmp_path / name)
    elif case == "too_large":
        path = _sparse_file(tmp_path / name, data.STL10_ARCHIVE_BYTES + 1, b"\x1f\x8b")
    else:
        path = _sparse_file(tmp_path / name, data.STL10_ARCHIVE_BYTES, b"PK")
    with pytest.raises(data.DataError, match=pattern) as error:
        data.check_stl10_archive(path)
    assert f"--stl10_archive {path}:" in str(error.value)
    assert "\n" not in str(error.value)


def test_check_stl10_archive_accepts_the_right_size_and_magic(tmp_path):
    path = _sparse_file(tmp_path / data.STL10_ARCHIVE_NAME, data.STL10_ARCHIVE_BYTES,
                        b"\x1f\x8b\x08")
    data.check_stl10_archive(path)


# ----------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_digits_shapes_and_values(digits):
    from sklearn.datasets import load_digits

    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    assert len(digits.test_labels) == 540  # ceil(0.3 * 1797)
    for images in (digits.train_images, digits.test_images):
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
        # grey copied to all three channels
        np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert digits.train_images.min() == 0 and digits.train_images.max() == 255
    counts = np.bincount(np.concatenate([digits.train_labels, digits.test_labels]))
    np.testing.assert_array_equal(counts, np.bincount(load_digits().target))


def test_digits_split_is_deterministic_and_stratified(digits):
    again = data.load_digits(32, seed=0)
    np.testing.assert_array_equal(again.test_images, digits.test_images)
    np.testing.assert_array_equal(again.train_labels, digits.train_labels)
    other = data.load_digits(32, seed=1)
    assert not np.array_equal(other.test_labels, digits.test_labels)
    share = np.bincount(digits.test_labels, minlength=10) / np.bincount(
        np.concatenate([digits.train_labels, digits.test_labels]), minlength=10)
    np.testing.assert_allclose(share, 0.3, atol=0.01)


def test_digits_at_the_native_size_are_the_scaled_originals(digits):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    originals = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    _, expected_test = train_test_split(originals, test_size=0.3, random_state=0,
                                        stratify=bunch.target)
    native = data.load_digits(8, seed=0)
    assert native.test_images.shape[1:] == (8, 8, 3)
    np.testing.assert_array_equal(native.test_images[..., 1], expected_test)
    np.testing.assert_array_equal(native.test_labels, digits.test_labels)


def test_unknown_dataset_and_bad_sizes_are_refused():
    with pytest.raises(data.DataError, match="unknown dataset 'mnist'"):
        data.load("mnist")
    with pytest.raises(data.DataError, match="image_size 0"):
        data.load("digits", image_size=0)
    with pytest.raises(data.DataError, match="test_fraction"):
        data.load("digits", test_fraction=1.0)


# ----------------------------------------------------------------------------
# batches


def _ids(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


def test_batches_without_seed_keep_the_array_order():
    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    ids = np.arange(10, dtype=np.int32)
    np.testing.assert_array_equal(_ids(data.batches(images, ids, 4)), np.arange(8))
    np.testing.assert_array_equal(
        _ids(data.batches(images, ids, 4, drop_remainder=False)), np.arange(10))
    first, _ = next(iter(data.batches(images, ids, 4, dtype=tf.float64)))
    assert first.dtype == tf.float64
    np.testing.assert_allclose(first.numpy(), images[:4] / 255.0)


def test_batches_with_seed_are_a_fixed_permutation_per_epoch():
    count = 30
    images = np.repeat(np.arange(count, dtype=np.uint8), 4 * 3).reshape(count, 2, 2, 3)
    ids = np.arange(count, dtype=np.int32)

    def epoch_order(seed, epoch):
        batched = data.batches(images, ids, 5, shuffle_seed=seed, epoch=epoch)
        order = []
        for pixels, labels in batched:
            # images travel with their labels
            np.testing.assert_allclose(pixels.numpy()[:, 0, 0, 0] * 255.0, labels.numpy(),
                                       atol=1e-4)
            order.extend(labels.numpy())
        return np.array(order)

    first = epoch_order(seed=3, epoch=0)
    np.testing.assert_array_equal(np.sort(first), ids)
    assert not np.array_equal(first, ids)
    np.testing.assert_array_equal(epoch_order(seed=3, epoch=0), first)
    assert not np.array_equal(epoch_order(seed=3, epoch=1), first)
    assert not np.array_equal(epoch_order(seed=4, epoch=0), first)


def test_raw_batches_scaled_in_a_compiled_step_equal_numpys_division_by_255():
    # Every uint8 value: the scaling inside a tf.function (where TF's graph optimizer would
    # turn "/ 255" into "* (1/255)") and in the pipeline give numpy's float32 x / 255.
    images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1).repeat(3, axis=-1)
    labels = np.arange(4, dtype=np.int32)
    exact = images / np.float32(255)
    raw, raw_labels = next(iter(data.batches(images, labels, 4, dtype=tf.uint8)))
    assert raw.dtype == tf.uint8 and raw_labels.dtype == tf.int32
    np.testing.assert_array_equal(raw.numpy(), images)
    in_step = tf.function(lambda x: tf.nn.relu(data.to_unit_range(x)))(raw)
    np.testing.assert_array_equal(in_step.numpy(), exact)
    scaled, _ = next(iter(data.batches(images, labels, 4)))
    np.testing.assert_array_equal(scaled.numpy(), exact)
    # Images that are not uint8 are taken as scaled already.
    np.testing.assert_array_equal(data.to_unit_range(scaled).numpy(), exact)


# ----------------------------------------------------------------------------
# digits: a small stratified training set (--train_per_class)


def scaled_originals():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8), bunch.target


def test_the_catalog_knows_the_digits_classes_and_the_smallest():
    _, labels = scaled_originals()
    counts = np.bincount(labels)
    assert (len(counts), counts.min()) == (catalog.DIGITS_CLASSES, catalog.DIGITS_SMALLEST_CLASS)


def test_a_per_class_training_set_is_stratified_in_file_order_and_the_rest_is_the_test_set():
    originals, labels = scaled_originals()
    split = data.load_digits(8, seed=3, train_per_class=4)
    np.testing.assert_array_equal(np.bincount(split.train_labels), [4] * 10)
    assert len(split.test_labels) == len(labels) - 40
    # Both halves are the originals in file order, and together every image once.
    chosen = data.stratified_subset(labels, 4, seed=3)
    assert (np.diff(chosen) > 0).all()
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    np.testing.assert_array_equal(split.train_images[..., 0], originals[chosen])
    np.testing.assert_array_equal(split.test_images[..., 0], originals[rest])
    np.testing.assert_array_equal(split.test_labels, labels[rest])


def test_the_per_class_subset_is_a_function_of_the_seed_and_nested_across_sizes():
    _, labels = scaled_originals()
    subsets = {seed: data.stratified_subset(labels, 6, seed) for seed in (0, 1)}
    np.testing.assert_array_equal(data.stratified_subset(labels, 6, 0), subsets[0])
    assert not np.array_equal(subsets[0], subsets[1])
    assert set(data.stratified_subset(labels, 4, 0)) < set(subsets[0])
    with pytest.raises(data.DataError, match="class 8 has only 174"):
        data.stratified_subset(labels, 175, 0)
