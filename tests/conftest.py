"""Test set-up: the project root on sys.path, quiet TF, deterministic ops."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

tf.config.experimental.enable_op_determinism()


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase defines test_session(), a deprecated helper that pytest collects
    # and TF then skips as "Not a test": it is not one of ours, so it is not collected.
    items[:] = [item for item in items if item.name != "test_session"]
