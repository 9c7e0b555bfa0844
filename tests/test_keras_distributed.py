"""tfnorm.keras under tf.distribute.MirroredStrategy: the synchronized schemes (mean-only,
batch and noisy batch norm) and layer norm trained by model.fit on 2 logical CPU devices
equal one device, in float64. The devices must exist before TensorFlow initializes: the
comparison runs tests/keras_mirrored_worker.py in a fresh process (as test_distributed.py
does). Without the cross-replica sum (the worker's --break_synchronization) the weights
differ by 0.64 relative (measured), so this comparison can fail."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-9


def test_two_mirrored_replicas_equal_one_device():
    result = subprocess.run([sys.executable, os.path.join(HERE, "keras_mirrored_worker.py")],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["replicas"] == 2
    for what in ("loss", "weights", "statistics"):
        assert found[what] <= TOLERANCE, (what, found)
    # Every running statistic and noise counter was compared, and training moved the
    # weights (the smallest relative move of any of them).
    assert found["statistics_count"] == 7 and found["noise_steps"] == [10]
    assert found["smallest_move"] > 1e-5, found
