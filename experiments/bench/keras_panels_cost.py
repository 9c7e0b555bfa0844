r"""What ``tfnorm.keras.PanelRecorder`` costs at every=1: the article's network as a Keras
model (``tfnorm.keras.article_model``, batch norm) trained by ``model.fit`` on digits,
epochs with the callback interleaved with epochs without it.

    python -m experiments.bench.keras_panels_cost                  # 96 px, 3 processes
    python -m experiments.bench.keras_panels_cost --image_size=32 --repeats=5

Each of --repeats fresh processes trains one model one epoch per ``fit`` call
(``initial_epoch`` moving on), the recorder attached to every other epoch in the order
with, without, without, with (so a drift of the machine's speed cancels), after two warm-up
epochs (one of each: Keras's and the callback's tracing) that are shown apart. Side by side
epochs are seconds apart, so the load of other processes on shared cores moves both sides
alike far more than between whole runs (an earlier version of this benchmark alternated
whole runs in fresh processes: their epochs spread by 66% at load 4-6, more than the effect). An epoch's time runs from its
start to the end of its callbacks (no validation pass: the cost is against training
alone). The overhead of a block of four, (with + with) / (without + without) - 1 in wall
seconds (and in the process's CPU seconds), is taken for every block of every process; the
target (TARGET): their median at most 10%. Shown beside it: the callback's own time in its
hooks, the warm-up, and the drawing of every panel (what ``draw=True`` adds after training)
per recorded epoch.
Writes --out_dir/cost.md and cost.json, with the load average at each process's start.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags, logging

from experiments import cli
from tfnorm.run import atomic

FLAGS = flags.FLAGS
TARGET = 0.10
ROOT = cli.REPOSITORY
NAMES = ("image_size", "blocks", "repeats", "out_dir")
# After the warm-up (with, without): blocks of four epochs with, without, without, with.
BLOCK = (True, False, False, True)


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_integer("blocks", 3, "Blocks of four measured epochs (with, without, without, "
                         "with) per process, after two warm-up epochs.", **fv)
    flags.DEFINE_integer("repeats", 3, "Fresh processes.", **fv)
    cli.define_flags(("image_size", "out_dir"),
                     dict(image_size=96, out_dir="results/keras_panels_cost"), flag_values,
                     helps=dict(image_size="Digits resized to this side (96: the article's).",
                                out_dir="Where cost.md and cost.json go."))
    flags.DEFINE_boolean("worker", False, "Internal: measure in this process and print the "
                         "timings as JSON.", **fv)


def check_flags(flag_values=FLAGS):
    values = {name: flag_values[name].value for name in NAMES}
    cli.check_positive(values, "image_size", "blocks", "repeats")
    if not flag_values.worker:
        cli.check_writable(values["out_dir"], "--out_dir")
    return values


def measure_here(config, scratch):
    """One process: every epoch's wall and CPU seconds and whether the recorder was on, its
    time in its hooks, and the drawing of its panels afterwards."""
    import keras
    import tensorflow as tf

    import tfnorm.keras as tk
    from tfnorm import data
    from tfnorm.run import four_panels, records

    load = os.getloadavg()[0]
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    digits = data.load("digits", image_size=config["image_size"])
    images, labels = digits.train_images / 255.0, digits.train_labels
    model = tk.article_model("batch", image_size=config["image_size"], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    epochs = []

    class Timed(tk.PanelRecorder):
        """The recorder, its time in the hooks it runs within an epoch added up (not its
        on_epoch_begin: it opens the directory once per fit, here once per epoch)."""

        def _timed(name):
            def hook(self, *args, **kwargs):
                start = time.monotonic()
                getattr(tk.PanelRecorder, name)(self, *args, **kwargs)
                epochs[-1]["hooks"] += time.monotonic() - start
            return hook

        on_train_batch_begin = _timed("on_train_batch_begin")
        on_epoch_end = _timed("on_epoch_end")

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu = time.monotonic(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            epochs[-1].update(wall=time.monotonic() - self.start,
                              cpu=time.process_time() - self.cpu)

    out_dir = os.path.join(scratch, "panels")
    recorder = Timed(out_dir, batch=(images[:20], labels[:20]), every=1, draw=False)
    schedule = (True, False) + BLOCK * config["blocks"]
    for epoch, recording in enumerate(schedule):
        epochs.append({"recording": recording, "hooks": 0.0})
        # The clock last: its epoch end comes after the recorder's.
        model.fit(images, labels, batch_size=20, initial_epoch=epoch, epochs=epoch + 1,
                  verbose=0, callbacks=([recorder] if recording else []) + [Clock()])
    start = time.monotonic()
    four_panels.draw_panels(out_dir)
    drawing = (time.monotonic() - start) / len(records.record_epochs(out_dir))
    return {"load": load, "epochs": epochs, "drawing_per_epoch": drawing}


def measure(config):
    runs = []
    for index in range(config["repeats"]):
        command = ([sys.executable, "-m", "experiments.bench.keras_panels_cost", "--worker"]
                   + [f"--{name}={config[name]}" for name in NAMES])
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["(no output)"]
            raise cli.ConfigError(f"measuring process {index + 1} failed: {lines[-1]}")
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        logging.info("process %d (load %.1f): %s", index + 1, runs[-1]["load"],
                     " ".join(f"{'+' if e['recording'] else '-'}{e['wall']:.2f}"
                              for e in runs[-1]["epochs"]))
    return runs


def block_overheads(epochs, key):
    """Per block of four measured epochs (with, without, without, with): (with1 + with4) /
    (without2 + without3) - 1, in ``key`` seconds ('wall' or 'cpu'). Adjacent epochs, so a
    drift of the machine's speed cancels to first order."""
    measured = epochs[2:]
    blocks = [measured[i:i + len(BLOCK)] for i in range(0, len(measured), len(BLOCK))]
    return [(b[0][key] + b[3][key]) / (b[1][key] + b[2][key]) - 1 for b in blocks]


def summarize(config, runs):
    processes = []
    for run in runs:
        measured = run["epochs"][2:]
        without = statistics.median(e["wall"] for e in measured if not e["recording"])
        hooks = statistics.median(e["hooks"] for e in measured if e["recording"])
        processes.append({
            "load": run["load"], "without_epoch": without,
            "overhead": statistics.median(block_overheads(run["epochs"], "wall")),
            "cpu_overhead": statistics.median(block_overheads(run["epochs"], "cpu")),
            "hooks_per_epoch": hooks, "hooks_share": hooks / without,
            "warmup_extra": run["epochs"][0]["wall"] - run["epochs"][1]["wall"],
            "drawing_per_epoch": run["drawing_per_epoch"], "epochs": run["epochs"]})
    blocks = {key: [o for run in runs for o in block_overheads(run["epochs"], key)]
              for key in ("wall", "cpu")}
    median = {key: statistics.median(p[key] for p in processes)
              for key in ("without_epoch", "hooks_per_epoch", "hooks_share", "warmup_extra",
                          "drawing_per_epoch")}
    median.update(overhead=statistics.median(blocks["wall"]),
                  cpu_overhead=statistics.median(blocks["cpu"]),
                  blocks=len(blocks["wall"]), overhead_range=[min(blocks["wall"]),
                                                              max(blocks["wall"])])
    return {"config": {k: config[k] for k in NAMES}, "processes": processes, "median": median,
            "target": TARGET, "met": median["overhead"] <= TARGET}


def markdown(result, command):
    config, median = result["config"], result["median"]
    low, high = median["overhead_range"]
    lines = [
        "# What tfnorm.keras.PanelRecorder costs (every=1)", "",
        f"Command: `{command}`. The article's network (`tfnorm.keras.article_model`, batch "
        f"norm) on digits at {config['image_size']} px, batch 20 (63 steps an epoch), Adam "
        f"1e-3; in each of {config['repeats']} fresh processes, two warm-up epochs, then "
        f"{config['blocks']} blocks of four epochs with the recorder on, off, off, on. An "
        "epoch: wall time from its start to the end of its callbacks. A block's overhead: "
        "(on + on) / (off + off) - 1, adjacent epochs, so that a drift of the machine's speed "
        "cancels.", "",
        "| process | load | epoch without s | overhead (median of its blocks) | CPU overhead | "
        "callback's hooks s/epoch | warm-up: first epoch - second, s | drawing s/epoch, "
        "after training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, p in enumerate(result["processes"], 1):
        lines.append(f"| {index} | {p['load']:.1f} | {p['without_epoch']:.2f} | "
                     f"{p['overhead']:+.1%} | {p['cpu_overhead']:+.1%} | "
                     f"{p['hooks_per_epoch']:.3f} | {p['warmup_extra']:.1f} | "
                     f"{p['drawing_per_epoch']:.2f} |")
    lines.append(f"| all {median['blocks']} blocks (median) | | {median['without_epoch']:.2f} | "
                 f"**{median['overhead']:+.1%}** (blocks {low:+.0%} to {high:+.0%}) | "
                 f"{median['cpu_overhead']:+.1%} | {median['hooks_per_epoch']:.3f} "
                 f"({median['hooks_share']:.1%} of an epoch) | {median['warmup_extra']:.1f} | "
                 f"{median['drawing_per_epoch']:.2f} |")
    verdict = "met" if result["met"] else "**not met**"
    lines += ["", f"Target: a median overhead of at most {TARGET:.0%} of an epoch: {verdict}. "
              "Load: the load average at each process's start, on 2 cores that other jobs may "
              "share (the spread of the blocks is theirs). The callback's hooks are its own "
              "time in the training loop, measured directly. The warm-up (Keras's tracing, and "
              "in the first epoch the callback's) and the drawing of every panel after "
              "training (`draw=True`; `draw=False` leaves it to `experiments.article.panels`) are paid "
              "apart from the epochs."]
    return "\n".join(lines) + "\n"


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = check_flags(FLAGS)
    if FLAGS.worker:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="keras_panels_cost_") as scratch:
            print(json.dumps(measure_here(config, scratch)))
        return
    command = cli.command_as_given("experiments.bench.keras_panels_cost", FLAGS, NAMES)
    result = summarize(config, measure(config))
    atomic.write_json(os.path.join(config["out_dir"], "cost.json"), result)
    atomic.write_text(os.path.join(config["out_dir"], "cost.md"), markdown(result, command))
    logging.info("median overhead %.1f%% (target %.0f%%)\n%s", 100 * result["median"]["overhead"],
                 100 * TARGET, json.dumps(result["median"]))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
