"""A tiny STL-10 in the real binary format, prepared by the real tfds ``stl10`` builder.

The files are byte-for-byte in the layout of the real ``stl10_binary.tar.gz`` (checked
against tensorflow_datasets/datasets/stl10/stl10_dataset_builder.py in tfds 4.9.10)::

    stl10_binary/train_X.bin   uint8 (N, 3, 96, 96), each channel column-major
    stl10_binary/train_y.bin   uint8 (N,), labels 1..10
    stl10_binary/test_X.bin, test_y.bin, unlabeled_X.bin
    stl10_binary/class_names.txt   ten names, one a line

tfds refuses a home-made archive in its manual_dir (the URL has a registered sha256), so,
as tfds's own builder tests do with their dummy_data folder, the fixture patches
``tfds.download.DownloadManager.download_and_extract`` to return the folder holding
``stl10_binary/``, and any real download to raise: nothing here touches the network.

Use (from a module in tests/, which pytest puts on sys.path)::

    import stl10_fixture

    with stl10_fixture.fake_stl10(tmp_dir, n_train=8, n_test=6) as data_dir:
        dataset = tfnorm.data.load("stl10", data_dir=data_dir)
        # or: run experiments.article.train with --dataset=stl10 --data_dir=<data_dir>
    expected = stl10_fixture.stl10_arrays(n_train=8, n_test=6)
    # expected.train_images[i] (96, 96, 3) uint8 == dataset.train_images[i],
    # expected.train_labels[i] in 0..9 == dataset.train_labels[i] (file order)

``fake_stl10`` writes the binaries under ``tmp_dir/stl10_source`` and prepares the real
builder into ``data_dir = tmp_dir/tfds`` before yielding, so anything that loads STL-10
with that data_dir finds it ready (it stays ready after the block too: the folder is a
normal prepared tfds data_dir). Inside the block sockets refuse to connect. Also:

- ``write_stl10_binaries(folder, ...)``: only the ``stl10_binary/`` files.
- ``write_stl10_archive(path, ...)``: the same files as a real ``.tar.gz`` (for the
  ``--stl10_archive`` checks; its size is of course not the real archive's).
- ``no_network()``: a context manager under which any socket connection raises.
- pytest fixture ``fake_stl10_dir`` (a prepared data_dir with the default sizes); use it by
  ``from stl10_fixture import fake_stl10_dir  # noqa: F401``.
"""

import collections
import contextlib
import io
import os
import socket
import tarfile
from unittest import mock

import numpy as np
import pytest

from tfnorm.run import atomic as tfnorm_io

IMAGE_SIDE = 96
CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
               "truck")

Stl10Arrays = collections.namedtuple(
    "Stl10Arrays", ["train_images", "train_labels", "test_images", "test_labels",
                    "unlabelled_images"])
Stl10Arrays.__doc__ = ("What the fake files hold, as tfds returns it: images uint8 "
                       "(N, 96, 96, 3), labels int32 0..9 (the files store 1..10).")


def _images(count, salt):
    """Images that a transpose, a flip or a shift changes in most pixels (rows grow
    linearly, columns quadratically, channels and images by other steps), so a wrong axis
    order cannot pass unnoticed. Returns uint8 (count, 96, 96, 3)."""
    def term(values, axis):
        shape = [1, 1, 1, 1]
        shape[axis] = len(values)
        return (values % 256).astype(np.uint8).reshape(shape)

    side = np.arange(IMAGE_SIDE)
    # uint8 sums wrap modulo 256, so the full-size array is the only big allocation.
    return (term(37 * np.arange(count) + 53 * salt, 0) + term(5 * side, 1)
            + term(2 * side * side, 2) + term(101 * np.arange(3), 3))


def _labels(count, offset):
    """Labels 0..9 cycling with a stride co-prime to 10, so 0 and 9 both appear once
    count >= 8 (the edges of the 1..10 -> 0..9 shift)."""
    return ((np.arange(count) * 7 + offset) % 10).astype(np.int32)


def stl10_arrays(n_train=8, n_test=6, n_unlabelled=2):
    """The content the fake files hold, in file order, as tfds should return it."""
    return Stl10Arrays(_images(n_train, 0), _labels(n_train, 0),
                       _images(n_test, 1), _labels(n_test, 3),
                       _images(n_unlabelled, 2))


def _x_bytes(images):
    """(N, 96, 96, 3) -> the file's (N, 3, 96, 96) with each channel column-major.

    tfds reads ``reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)``; swapping axes 1 and 3
    is its own inverse, so the same transpose writes the file.
    """
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()


def _y_bytes(labels):
    return (labels + 1).astype(np.uint8).tobytes()


def _stl10_files(arrays):
    return {
        "train_X.bin": _x_bytes(arrays.train_images),
        "train_y.bin": _y_bytes(arrays.train_labels),
        "test_X.bin": _x_bytes(arrays.test_images),
        "test_y.bin": _y_bytes(arrays.test_labels),
        "unlabeled_X.bin": _x_bytes(arrays.unlabelled_images),
        "class_names.txt": ("\n".join(CLASS_NAMES) + "\n").encode(),
    }


def write_stl10_binaries(folder, n_train=8, n_test=6, n_unlabelled=2):
    """Write ``folder/stl10_binary/*`` and return the folder (what tfds's
    download_and_extract returns for the real archive)."""
    for name, data in _stl10_files(stl10_arrays(n_train, n_test, n_unlabelled)).items():
        tfnorm_io.write_bytes(os.path.join(folder, "stl10_binary", name), data)
    return str(folder)


def write_stl10_archive(path, n_train=8, n_test=6, n_unlabelled=2):
    """Write the fake files as a real gzip-compressed tar holding ``stl10_binary/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        directory = tarfile.TarInfo("stl10_binary")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        archive.addfile(directory)
        for name, data in _stl10_files(stl10_arrays(n_train, n_test, n_unlabelled)).items():
            member = tarfile.TarInfo(f"stl10_binary/{name}")
            member.size = len(data)
            member.mode = 0o644
            archive.addfile(member, io.BytesIO(data))
    tfnorm_io.write_bytes(str(path), buffer.getvalue())
    return str(path)


@contextlib.contextmanager
def no_network():
    """Any attempt to open a network connection raises OSError."""
    def refuse(sock, address, *args, **kwargs):
        raise OSError(f"network access attempted in a test (to {address!r})")
    with mock.patch.object(socket.socket, "connect", refuse), \
            mock.patch.object(socket.socket, "connect_ex", refuse), \
            mock.patch.object(socket, "create_connection",
                              lambda address, *a, **k: refuse(None, address)):
        yield


@contextlib.contextmanager
def fake_stl10(tmp_dir, n_train=8, n_test=6, n_unlabelled=2):
    """Prepare the real tfds ``stl10`` builder from fake files; yields its data_dir.

    While preparing, tfds's download_and_extract returns the fake folder and a real
    download raises; those patches end before the yield (so they cannot leak into other
    tests), while sockets keep refusing to connect for the whole block.
    """
    import tensorflow_datasets as tfds

    tmp_dir = str(tmp_dir)
    source = write_stl10_binaries(os.path.join(tmp_dir, "stl10_source"), n_train, n_test,
                                  n_unlabelled)
    data_dir = os.path.join(tmp_dir, "tfds")

    def refuse_download(*args, **kwargs):
        raise OSError("tfds tried to download in a test")

    with no_network():
        with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                               lambda self, url_or_urls: source), \
                mock.patch.object(tfds.download.DownloadManager, "_download",
                                  refuse_download):
            builder = tfds.builder("stl10", data_dir=data_dir)
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        yield data_dir


@pytest.fixture(scope="module")
def fake_stl10_dir(tmp_path_factory):
    """A data_dir holding the prepared fake STL-10 (8 train, 6 test, 2 unlabelled)."""
    with fake_stl10(tmp_path_factory.mktemp("stl10")) as data_dir:
        yield data_dir
