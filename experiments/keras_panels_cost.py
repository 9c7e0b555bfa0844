r"""What ``tfnorm.keras.PanelRecorder`` costs: the article's network as a Keras model
(``tfnorm.keras.article_model``, batch norm) trained by ``model.fit`` on digits, with the
callback recording every epoch against without it, whole processes in turn.

    python -m experiments.keras_panels_cost                  # 96 px, 6 epochs, 3 pairs
    python -m experiments.keras_panels_cost --image_size=32 --pairs=5

Each pair runs both sides one after the other in fresh processes, the order alternating
from pair to pair. An epoch's time is the wall time from its start to the end of its last
callback (no validation pass: the ratio is against training alone); a run's epoch time
is the median over epochs 2.. (epoch 1 also pays Keras's and the callback's tracing, shown
apart). The overhead of a pair is (with - without) / without; the target (TARGET): a
median overhead of at most 10%, and the callback's own time in its hooks at most 10% of
an epoch. The callback's own time in its hooks, the first epoch's
extra seconds and the drawing of every panel and GIF after training (``draw=True``) are
shown beside it, and the same overhead in the process's CPU seconds (less moved by other
processes on shared cores than wall time). Writes --out_dir/cost.md and cost.json; the
load average of the machine at each run's start is in both.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags, logging

from experiments import cli
from tfnorm import io

FLAGS = flags.FLAGS
TARGET = 0.10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("image_size", "epochs", "pairs", "out_dir")


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_integer("image_size", 96, "Digits resized to this side (96: the article's).",
                         **fv)
    flags.DEFINE_integer("epochs", 6, "Epochs of each run (batch 20, 63 steps each).", **fv)
    flags.DEFINE_integer("pairs", 3, "Pairs of runs (one with the callback, one without).",
                         **fv)
    flags.DEFINE_string("out_dir", "results/keras_panels_cost", "Where cost.md and cost.json "
                        "go.", **fv)
    flags.DEFINE_enum("side", None, ["with", "without"], "Internal: run one side in this "
                      "process and print its timings as JSON.", **fv)


def check_flags(flag_values=FLAGS):
    values = {name: flag_values[name].value for name in NAMES}
    cli.check_positive(values, "image_size", "pairs")
    if values["epochs"] < 2:
        raise cli.ConfigError(f"--epochs={values['epochs']}: at least 2 (epoch 1 pays the "
                              "tracing and is shown apart)")
    if flag_values.side is None:
        cli.check_writable(values["out_dir"], "--out_dir")
    return values


def run_side(config, side):
    """One run in this process: per-epoch seconds, the callback's seconds per epoch and
    after training."""
    import keras
    import tensorflow as tf

    import tfnorm.keras as tk
    from tfnorm import data

    load = os.getloadavg()[0]
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    digits = data.load("digits", image_size=config["image_size"])
    images, labels = digits.train_images / 255.0, digits.train_labels
    model = tk.article_model("batch", image_size=config["image_size"], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    spent = {"epochs": [], "epochs_cpu": [], "in_hooks": [], "after_training": 0.0}

    class Timed(tk.PanelRecorder):
        """The recorder, its time in each hook added up."""

        def _timed(name):
            def hook(self, *args, **kwargs):
                start = time.monotonic()
                getattr(tk.PanelRecorder, name)(self, *args, **kwargs)
                if name == "on_train_end":
                    spent["after_training"] += time.monotonic() - start
                else:
                    spent["in_hooks"][-1] += time.monotonic() - start
            return hook

        on_epoch_end = _timed("on_epoch_end")
        on_train_batch_begin = _timed("on_train_batch_begin")
        on_train_end = _timed("on_train_end")

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu = time.monotonic(), time.process_time()
            spent["in_hooks"].append(0.0)

        def on_epoch_end(self, epoch, logs=None):
            spent["epochs"].append(time.monotonic() - self.start)
            spent["epochs_cpu"].append(time.process_time() - self.cpu)

    callbacks = [Clock()]
    if side == "with":
        out_dir = os.path.join(config["scratch"], f"panels_{os.getpid()}")
        callbacks.insert(0, Timed(out_dir, batch=(images[:20], labels[:20]), every=1))
    model.fit(images, labels, batch_size=20, epochs=config["epochs"], verbose=0,
              callbacks=callbacks)
    return dict(spent, load=load)


def measure(config):
    runs = []
    for index in range(config["pairs"]):
        order = ("without", "with") if index % 2 == 0 else ("with", "without")
        pair = {}
        for side in order:
            command = ([sys.executable, "-m", "experiments.keras_panels_cost", f"--side={side}"]
                       + [f"--{name}={config[name]}" for name in NAMES])
            result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            if result.returncode != 0:
                lines = result.stderr.strip().splitlines() or ["(no output)"]
                raise cli.ConfigError(f"the run {side} the callback failed: {lines[-1]}")
            pair[side] = json.loads(result.stdout.strip().splitlines()[-1])
            logging.info("pair %d, %s: epochs %s s (load %.1f)", index + 1, side,
                         " ".join(f"{s:.2f}" for s in pair[side]["epochs"]),
                         pair[side]["load"])
        runs.append(pair)
    return runs


def summarize(config, runs):
    pairs = []
    for pair in runs:
        steady = {side: statistics.median(pair[side]["epochs"][1:]) for side in pair}
        cpu = {side: statistics.median(pair[side]["epochs_cpu"][1:]) for side in pair}
        hooks = statistics.median(pair["with"]["in_hooks"][1:])
        pairs.append({
            "without_epoch": steady["without"], "with_epoch": steady["with"],
            "overhead": steady["with"] / steady["without"] - 1,
            "cpu_overhead": cpu["with"] / cpu["without"] - 1,
            "hooks_per_epoch": hooks, "hooks_share": hooks / steady["without"],
            "first_epoch_extra": pair["with"]["epochs"][0] - pair["without"]["epochs"][0],
            "drawing": pair["with"]["after_training"],
            "load": [pair["without"]["load"], pair["with"]["load"]], "runs": pair})
    median = {key: statistics.median(p[key] for p in pairs)
              for key in ("without_epoch", "with_epoch", "overhead", "cpu_overhead",
                          "hooks_per_epoch",
                          "hooks_share", "first_epoch_extra", "drawing")}
    spread = [min(p["without_epoch"] for p in pairs), max(p["without_epoch"] for p in pairs)]
    return {"config": {k: config[k] for k in NAMES}, "pairs": pairs, "median": median,
            "without_spread": spread, "target": TARGET,
            "met": median["overhead"] <= TARGET and median["hooks_share"] <= TARGET}


def markdown(result, command):
    config, median = result["config"], result["median"]
    lines = [
        "# What tfnorm.keras.PanelRecorder costs (every=1)", "",
        f"Command: `{command}`. The article's network (`tfnorm.keras.article_model`, batch "
        f"norm) on digits at {config['image_size']} px, batch 20 (63 steps an epoch), Adam "
        f"1e-3, {config['epochs']} epochs, without and with the callback recording every "
        "epoch, in fresh processes, the order alternating pair by pair. Epoch: median over "
        "epochs 2.. of the wall time to the end of the epoch's callbacks.", "",
        "| pair | load (without, with) | epoch without s | epoch with s | overhead | "
        "CPU overhead | callback's hooks s/epoch | first epoch extra s | drawing after "
        "training s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, p in enumerate(result["pairs"], 1):
        lines.append(f"| {index} | {p['load'][0]:.1f}, {p['load'][1]:.1f} | "
                     f"{p['without_epoch']:.2f} | {p['with_epoch']:.2f} | "
                     f"{p['overhead']:+.1%} | {p['cpu_overhead']:+.1%} | "
                     f"{p['hooks_per_epoch']:.3f} | "
                     f"{p['first_epoch_extra']:+.1f} | {p['drawing']:.1f} |")
    lines.append(f"| median | | {median['without_epoch']:.2f} | {median['with_epoch']:.2f} | "
                 f"**{median['overhead']:+.1%}** | {median['cpu_overhead']:+.1%} | "
                 f"{median['hooks_per_epoch']:.3f} "
                 f"({median['hooks_share']:.1%} of an epoch) | "
                 f"{median['first_epoch_extra']:+.1f} | {median['drawing']:.1f} |")
    verdict = "met" if result["met"] else "**not met**"
    low, high = result["without_spread"]
    lines += ["", f"Target: at most {TARGET:.0%} of an epoch, both the median wall overhead and "
              f"the callback's own time in the training loop (its hooks): {verdict}. The runs "
              f"without the callback alone spread from {low:.2f} to {high:.2f} s an epoch "
              f"({high / low - 1:.0%}) over the pairs: a wall overhead smaller than that is "
              "not resolved on these shared cores, while the hooks' time is measured directly. "
              "The first epoch's extra seconds (the callback's tracing, once per run) and the "
              "drawing after training (every panel and GIF, as `experiments.panels` would; "
              "`draw=False` leaves it to that command) are one-off costs shown apart."]
    return "\n".join(lines) + "\n"


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = check_flags(FLAGS)
    if FLAGS.side:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="keras_panels_cost_") as scratch:
            print(json.dumps(run_side(dict(config, scratch=scratch), FLAGS.side)))
        return
    command = cli.command_as_given("experiments.keras_panels_cost", FLAGS, NAMES)
    result = summarize(config, measure(config))
    io.write_json(os.path.join(config["out_dir"], "cost.json"), result)
    io.write_text(os.path.join(config["out_dir"], "cost.md"), markdown(result, command))
    logging.info("median overhead %.1f%% (target %.0f%%)\n%s", 100 * result["median"]["overhead"],
                 100 * TARGET, json.dumps(result["median"]))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
