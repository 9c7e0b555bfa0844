"""tfnorm.run.shared_cores: compare's workers, which share the cores, get thread pools that do not
spin; that changes no result (test_compare's jobs=2 against jobs=1 checks the bits)."""

import os
import subprocess
import sys

from experiments import workers
from tfnorm.run import shared_cores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shares_cores_only_with_other_workers():
    assert not shared_cores.shares_cores({})
    assert not shared_cores.shares_cores({shared_cores.SHARED_CORES: "1"})
    assert not shared_cores.shares_cores({shared_cores.SHARED_CORES: "0"})
    assert shared_cores.shares_cores({shared_cores.SHARED_CORES: "2"})


def test_stop_spinning_configures_the_pools_before_the_first_op_and_only_then():
    code = (
        "from tfnorm.run import shared_cores\n"
        "import tensorflow as tf\n"
        "from tensorflow.python.eager import context\n"
        "first = shared_cores.stop_spinning()\n"
        "tf.constant(1.0) + 1.0\n"
        "print(first, context.context().config.experimental.disable_thread_spinning,"
        " shared_cores.stop_spinning())\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "False"]


def test_each_worker_is_told_how_many_share_the_cores(tmp_path):
    show = [sys.executable, "-c",
            f"import os; print('shared', os.environ.get({shared_cores.SHARED_CORES!r}))"]
    workers.run_shards(lambda index: show, 2, [], workers.Progress(0, 0, 2), str(tmp_path))
    for index in (1, 2):
        with open(tmp_path / f"shard_{index}_of_2.log") as log:
            assert log.read().split() == ["shared", "2"]
