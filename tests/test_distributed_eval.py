"""DistributedTrainer.eval_step on a last batch smaller than the number of replicas:
mirrored on 2 logical CPU devices, 101 test images in batches of 100 (a last batch of
1, so one replica gets no rows) give the single-process loss sum and correct count.
Logical devices must be set before TensorFlow initializes: the check runs in a
subprocess."""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from tfnorm import distributed
    strategy = distributed.make_strategy("mirrored", cpu_devices=2)
    import tensorflow as tf
    import tfnorm
    from tfnorm import training

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, [101, 16, 16, 3]).astype(np.uint8)
    labels = rng.integers(0, 10, 101).astype(np.int32)
    totals = {}
    # float32 too: its oneDNN convolution mishandles an empty batch.
    for dtype in (tf.float64, tf.float32):
        options = dict(dtype=dtype, seed=3, depth=3)
        reference = training.Trainer(tfnorm.article_network("batch", **options),
                                     tfnorm.make_optimizer("sgd", 0.1))
        with distributed.scope(strategy):
            network = distributed.synchronize(tfnorm.article_network("batch", **options))
            trainer = distributed.DistributedTrainer(
                network, tfnorm.make_optimizer("sgd", 0.1), strategy)
        totals["replicas"] = trainer.num_replicas
        for name, step in (("distributed", trainer.eval_step), ("single", reference.eval_step)):
            loss_sum = correct = 0.0
            for start in range(0, 101, 100):
                batch_loss, batch_correct = step(images[start:start + 100],
                                                 labels[start:start + 100])
                loss_sum += float(batch_loss)
                correct += float(batch_correct)
            totals[f"{name} {dtype.name}"] = [loss_sum, correct]
    print(json.dumps(totals))
""")


def test_mirrored_evaluation_of_101_images_on_2_devices_equals_one_process():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=600, cwd=ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    totals = json.loads(result.stdout.strip().splitlines()[-1])
    assert totals["replicas"] == 2
    for dtype, tolerance in (("float64", 1e-10), ("float32", 1e-5)):
        loss, correct = totals[f"distributed {dtype}"]
        expected_loss, expected_correct = totals[f"single {dtype}"]
        assert correct == expected_correct, dtype
        assert abs(loss - expected_loss) <= tolerance * abs(expected_loss), (dtype, loss,
                                                                             expected_loss)
