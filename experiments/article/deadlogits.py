r"""Dead logits: how often the article network's last ReLU, which feeds the softmax, is
zero, measured on the finished runs of a compare directory (their last checkpoints, the
test set, evaluation mode):

    python -m experiments.article.deadlogits --compare_dir=runs/compare --out_dir=results/deadlogits

Per run: the fraction of logits that are exactly 0; the number of dead classes, whose
logit is 0 on every test image (the ReLU's input is negative everywhere, so no gradient
reaches that unit again and the class is predicted only by ties); the fraction of test
images whose ten logits are all 0 (a uniform softmax); the test accuracy on the others. Writes
deadlogits.csv (a row per scheme and seed) and deadlogits.md (means with 95% intervals,
tfnorm.analysis.stats).
"""

import os

from absl import flags, logging
import numpy as np

from experiments import cli
from tfnorm.analysis import compare_grid, stats
from tfnorm.run import atomic, records, rundir, runid

FLAGS = flags.FLAGS
METRICS = ("zero_logits", "dead_classes", "dead_images", "test_acc_alive")


def define_flags(flag_values=FLAGS):
    cli.define_flags(("schemes", "compare_dir", "out_dir"), flag_values=flag_values,
                     helps=dict(out_dir="Where deadlogits.csv and .md go."))
    flags.DEFINE_string("versus_dir", None, "Another compare directory, the same grid but "
                        "for one flag (e.g. --final_activation=linear): its runs are "
                        "measured too and paired by scheme and seed (versus minus "
                        "compare_dir).", flag_values=flag_values)


def finished_runs(compare_dir, schemes):
    """[(scheme, seed, run_dir, config)] of the finished runs under ``compare_dir``, each
    with its final checkpoint read whole and checked to be of the run (one line, exit 6,
    naming a damaged one). Imports TensorFlow."""
    found = []
    grid = compare_grid.find_runs(compare_dir, schemes)
    for scheme in schemes:
        for run_dir in grid.get(scheme, {}).values():
            config = cli.stored_config(run_dir)
            if config and rundir.is_finished(run_dir, config):
                rundir.check_checkpoint(run_dir, runid.run_identity(config))
                found.append((scheme, config["seed"], run_dir, config))
    if not found:
        raise cli.ConfigError(f"--compare_dir {compare_dir}: no finished run of "
                              f"{', '.join(schemes)}")
    return found


def measure(run_dir, config, dataset):
    """The dead-logit measurements of one run's final network."""
    import tensorflow as tf  # after the flags and files were checked

    from tfnorm import data
    from tfnorm.run import runner
    network, _, checkpoint, _ = runner.build(config)
    rundir.restore_checkpoint(checkpoint, tf.train.latest_checkpoint(
        os.path.join(run_dir, records.CHECKPOINT_DIR)), runid.run_identity(config))
    logits = np.concatenate([
        network.forward(data.to_unit_range(images), training=False)[0].numpy()
        for images, _ in data.batches(dataset.test_images, dataset.test_labels, 100,
                                      dtype=tf.uint8, drop_remainder=False)])
    dead = np.all(logits == 0, axis=1)
    correct = logits.argmax(axis=1) == dataset.test_labels
    return dict(zero_logits=float(np.mean(logits == 0)),
                dead_classes=int(np.sum(np.all(logits == 0, axis=0))),
                dead_images=float(np.mean(dead)),
                test_acc_alive=float(np.mean(correct[~dead])) if (~dead).any() else np.nan,
                test_acc=float(np.mean(correct)))


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.compare_dir or not os.path.isdir(FLAGS.compare_dir):
        raise cli.ConfigError(f"--compare_dir {FLAGS.compare_dir}: no such directory")
    schemes = cli.parse_schemes(FLAGS.schemes)
    sources = [FLAGS.compare_dir] + ([FLAGS.versus_dir] if FLAGS.versus_dir else [])
    out_dir = FLAGS.out_dir or FLAGS.compare_dir
    cli.check_writable(out_dir, "--out_dir")
    runs = {source: finished_runs(source, schemes) for source in sources}
    from tfnorm.run import runner  # TensorFlow loads here, once the flags are good
    datasets, rows = {}, []
    for source in sources:
        for scheme, seed, run_dir, config in runs[source]:
            key = (config["dataset"], config["image_size"], config["train_limit"],
                   config["test_limit"])
            if key not in datasets:
                datasets[key] = runner.load_data(config)
            name = scheme if source == FLAGS.compare_dir else f"{scheme} (versus)"
            rows.append(dict(scheme=name, seed=seed, final_activation=config.get(
                "final_activation", "relu"), **measure(run_dir, config, datasets[key])))
            logging.info("%s seed %d: %s", name, seed, rows[-1])
    text = (f"# Dead logits in {', '.join(map(cli.repo_path, sources))}\n\nzero_logits: "
            "fraction of the last layer's outputs (after its activation) that are exactly 0; "
            "dead_classes: logit units that are 0 on every test image; dead_images: "
            "fraction of test images whose ten logits are all 0; test_acc_alive: test "
            "accuracy on the other images. Mean [95% t interval] over seeds.\n\n"
            + stats.markdown_table(stats.summarize(rows, METRICS + ("test_acc",))))
    for scheme in (schemes if FLAGS.versus_dir else ()):
        paired = [r for r in rows if r["scheme"] in (scheme, f"{scheme} (versus)")]
        if len({r["scheme"] for r in paired}) == 2:
            text += (f"\n## {scheme}: {cli.repo_path(FLAGS.versus_dir)} against "
                     f"{cli.repo_path(FLAGS.compare_dir)}, paired "
                     "by seed\n\n" + stats.markdown_table(stats.summarize(
                         paired, ("test_acc", "dead_images"), baseline=scheme,
                         directions={"dead_images": -1})))
    atomic.write_csv(os.path.join(out_dir, "deadlogits.csv"), rows)
    atomic.write_text(os.path.join(out_dir, "deadlogits.md"), text)

if __name__ == "__main__":
    define_flags()
    cli.run(main)
