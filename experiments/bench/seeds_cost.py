r"""What more seeds cost: ``compare --seeds=N`` against ``compare --seeds=1``, whole
processes (start-up, tracing, workers, summary and figures included), in turn.

    python -m experiments.bench.seeds_cost                      # the demo's settings, 3 pairs
    python -m experiments.bench.seeds_cost --pairs=5 --seeds=5 --schemes=none,batch,layer

Each pair runs both commands one after the other, the order alternating from pair to
pair, each into a fresh --out_dir (nothing reused); the ratio is taken pair by pair, so
that a machine whose speed drifts moves both sides of a ratio alike. Wall seconds from a
monotonic clock around the child; CPU seconds from the kernel's accounting of the
finished child and everything it waited for (compare's workers included). Writes
--out_dir/seeds_cost.md and seeds_cost.json. The target: the median wall ratio, 5 seeds
against 1, at most 2.0 (TARGET_RATIO).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags, logging

from experiments import cli
from tfnorm.run import atomic

FLAGS = flags.FLAGS
TARGET_RATIO = 2.0
ROOT = cli.REPOSITORY


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_integer("pairs", 3, "Pairs of runs (one of each command).", **fv)
    flags.DEFINE_list("compare_flags", [], "More flags for both compare commands, e.g. "
                      "--compare_flags=--epochs=2,--image_size=16 (default: the demo's).", **fv)
    cli.define_flags(("schemes", "seeds", "out_dir"),
                     dict(schemes="none,batch,layer", seeds=5, out_dir="results"), flag_values,
                     helps=dict(schemes="compare's --schemes.",
                                seeds="The seeds of the side timed against --seeds=1.",
                                out_dir="Where seeds_cost.md and .json go."))


def check_flags(flag_values=FLAGS):
    schemes = cli.parse_schemes(flag_values.schemes)
    cli.check_positive({name: flag_values[name].value for name in ("seeds", "pairs")},
                       "seeds", "pairs")
    if flag_values.seeds == 1:
        raise cli.ConfigError("--seeds=1: nothing to compare with --seeds=1")
    extra = list(flag_values.compare_flags)
    for flag in extra:
        if not flag.startswith("--") or flag.split("=")[0] in ("--seeds", "--out_dir",
                                                                "--schemes"):
            raise cli.ConfigError(f"--compare_flags: {flag!r} is not a compare flag this "
                                  "benchmark leaves to you")
    cli.check_writable(flag_values.out_dir, "--out_dir")
    return dict(schemes=schemes, seeds=flag_values.seeds, pairs=flag_values.pairs,
                compare_flags=extra, out_dir=flag_values.out_dir)


def compare_command(config, seeds, out_dir):
    return ([sys.executable, "-m", "experiments.article.compare",
             f"--schemes={','.join(config['schemes'])}",
             f"--seeds={seeds}", f"--out_dir={out_dir}", "--noprogress"]
            + config["compare_flags"])


def timed(command):
    """(wall seconds, CPU seconds of the child and its waited-for descendants)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        raise cli.ConfigError(f"{' '.join(command[2:4])} failed: {lines[-1]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(config, run=timed):
    """Every pair's seconds and ratios (``run(command)`` -> (wall, cpu))."""
    pairs = []
    with tempfile.TemporaryDirectory(prefix="seeds_cost_") as scratch:
        for index in range(config["pairs"]):
            order = (1, config["seeds"]) if index % 2 == 0 else (config["seeds"], 1)
            pair = {}
            for seeds in order:
                out_dir = os.path.join(scratch, f"pair{index}_seeds{seeds}")
                pair[seeds] = run(compare_command(config, seeds, out_dir))
                logging.info("pair %d, --seeds=%d: %.1f s wall, %.1f s CPU", index + 1, seeds,
                             *pair[seeds])
            many, one = pair[config["seeds"]], pair[1]
            pairs.append({"many_wall": many[0], "many_cpu": many[1], "one_wall": one[0],
                          "one_cpu": one[1], "wall_ratio": many[0] / one[0],
                          "cpu_ratio": many[1] / one[1], "first": order[0]})
    return pairs


def summarize(config, pairs):
    median = {key: statistics.median(p[key] for p in pairs)
              for key in ("many_wall", "many_cpu", "one_wall", "one_cpu", "wall_ratio",
                          "cpu_ratio")}
    return {"config": config, "pairs": pairs, "median": median, "target": TARGET_RATIO,
            "met": median["wall_ratio"] <= TARGET_RATIO, "load_end": list(os.getloadavg())}


def markdown(result, command):
    config, median = result["config"], result["median"]
    n = config["seeds"]
    lines = [
        "# What more seeds cost: compare --seeds=%d against --seeds=1" % n, "",
        f"Command: `{command}` (each compare into a fresh directory; order alternating "
        "pair by pair). Schemes: " + ", ".join(config["schemes"]) + "; compare flags: "
        + (" ".join(config["compare_flags"]) or "the defaults (the demo's)") + ".", "",
        f"| pair | first | --seeds={n} wall s | --seeds=1 wall s | wall ratio | "
        f"--seeds={n} CPU s | --seeds=1 CPU s | CPU ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, p in enumerate(result["pairs"], 1):
        lines.append(f"| {index} | --seeds={p['first']} | {p['many_wall']:.1f} | "
                     f"{p['one_wall']:.1f} | {p['wall_ratio']:.2f} | {p['many_cpu']:.1f} | "
                     f"{p['one_cpu']:.1f} | {p['cpu_ratio']:.2f} |")
    lines.append(f"| median | | {median['many_wall']:.1f} | {median['one_wall']:.1f} | "
                 f"**{median['wall_ratio']:.2f}** | {median['many_cpu']:.1f} | "
                 f"{median['one_cpu']:.1f} | {median['cpu_ratio']:.2f} |")
    verdict = "met" if result["met"] else "**not met**"
    if n != 5:
        verdict += " (the target is for --seeds=5)"
    lines += ["", f"Target: median wall ratio <= {TARGET_RATIO:.1f}: {verdict}."]
    return "\n".join(lines) + "\n"


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = check_flags(FLAGS)
    command = cli.command_as_given("experiments.bench.seeds_cost", FLAGS,
                                   ("schemes", "seeds", "pairs", "compare_flags", "out_dir"))
    result = summarize(config, measure(config))
    atomic.write_json(os.path.join(config["out_dir"], "seeds_cost.json"), result)
    atomic.write_text(os.path.join(config["out_dir"], "seeds_cost.md"), markdown(result, command))
    logging.info("median wall ratio %.2f (target %.1f)\n%s", result["median"]["wall_ratio"],
                 TARGET_RATIO, json.dumps(result["median"]))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
