"""The command line's first impression, on any CPU: a bad flag is one line on stderr and
exit 2, before TensorFlow is imported, whether or not TF_CPP_MIN_LOG_LEVEL is set; and
TensorFlow's start-up banner (printed once per native library that loads absl logging,
twice on an Intel AVX-512 machine) never reaches the terminal, while everything else it
prints does. The banner filter is fed a captured banner, so it is tested even on a
machine whose TensorFlow prints none.

(The study scripts' bad flags are in tests/test_studies_depth.py, with the same wrapper.)"""

import os
import subprocess
import sys
import time

import pytest

from experiments import banner, cli
from test_studies_depth import NO_TENSORFLOW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Captured on an AMD EPYC (one load) and an Intel Xeon with AVX-512/AMX (a second load,
# with the cpu_feature_guard pair), interleaved with what must get through.
BANNER_AMD = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795851434.608353    6024 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off "
    "errors from different computation orders. To turn them off, set the environment "
    "variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
    "I0000 00:00:1795851434.641324    6024 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in "
    "other operations, rebuild TensorFlow with the appropriate compiler flags.\n")
BANNER_INTEL = BANNER_AMD.replace("AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA",
                                  "AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX512_FP16 "
                                  "AVX_VNNI AMX_TILE AMX_INT8 AMX_BF16 FMA")
KEPT = ("W0000 00:00:1795851500.000001    6024 op_level_cost_estimator.cc:699] Error in "
        "PredictCost() for the op: a real warning\n"
        "E0000 00:00:1795851500.000002    6024 some_kernel.cc:12] a real error\n"
        "2026-11-28 08:00:00.000000: W tensorflow/core/framework/op_kernel.cc:1857] OP_REQUIRES"
        " failed\n")


def pump(text, chunk=7):
    """What pump_filtered passes on when ``text`` arrives in chunks of ``chunk`` bytes."""
    source_read, source_write = os.pipe()
    sink_read, sink_write = os.pipe()
    data = text.encode()
    pid = os.fork()
    if pid == 0:  # the writer: small chunks, so lines arrive split
        os.close(source_read)
        for start in range(0, len(data), chunk):
            os.write(source_write, data[start:start + chunk])
        os._exit(0)
    os.close(source_write)
    banner.pump_filtered(source_read, sink_write)
    os.close(sink_write)
    os.waitpid(pid, 0)
    out = b""
    while True:
        part = os.read(sink_read, 65536)
        if not part:
            break
        out += part
    return out.decode()


@pytest.mark.parametrize("captured", [BANNER_AMD, BANNER_INTEL], ids=["amd", "intel"])
def test_the_banner_filter_drops_every_banner_line_and_keeps_the_rest(captured):
    text = captured + KEPT[:120] + captured + KEPT[120:] + captured + "a last line without end"
    assert pump(text) == KEPT + "a last line without end"
    assert pump(text, chunk=65536) == KEPT + "a last line without end"
    assert all(banner.is_banner(line) for line in captured.splitlines())
    assert not any(banner.is_banner(line) for line in KEPT.splitlines())


def test_the_filter_is_not_a_prefix_match_on_ordinary_lines():
    for line in ("WARNING: something else", "I0000 00:00:1.0 1 port.cc:1] another message",
                 "To enable the following instructions in your own code"):
        assert not banner.is_banner(line)


# (module, arguments, the one line): every script that is not a study.
BAD_FLAGS = [
    ("train", ["--scheme=group", "--groups=5", "--out_dir={tmp}/run"],
     "error: --groups=5: does not divide the network width 16 (use 1, 2, 4, 8 or 16)"),
    ("train", ["--epochs=0", "--out_dir={tmp}/run"], "error: --epochs=0: must be a positive"),
    ("train", ["--seed=-1", "--out_dir={tmp}/run"], "error: --seed=-1: must be between 0"),
    ("train", ["--cpu_devices=2", "--out_dir={tmp}/run"],
     "error: --cpu_devices=2: applies to --strategy=mirrored only"),
    ("compare", ["--seeds=0", "--out_dir={tmp}/run"], "error: --seeds=0: must be a positive"),
    ("compare", ["--schemes=none,bn", "--out_dir={tmp}/run"],
     "error: --schemes: unknown scheme 'bn'"),
    ("panels", ["--run_dir={tmp}/missing"], "error: --run_dir {tmp}/missing: no such"),
    ("benchmark", ["--rounds=0", "--out_dir={tmp}/run"], "error: --rounds=0: must be a"),
    ("benchmark_seeds", ["--seeds=1", "--out_dir={tmp}/run"],
     "error: --seeds=1: nothing to compare with --seeds=1"),
    ("benchmark_seeds", ["--compare_flags=--out_dir=x", "--out_dir={tmp}/run"],
     "error: --compare_flags: '--out_dir=x' is not a compare flag"),
    ("overfit", ["--train_per_class=5", "--out_dir={tmp}/run", "--results_dir={tmp}/res"],
     "error: --train_per_class=5: 50 training images are not whole batches of 20"),
    ("crosspanels", ["--compare_dir={tmp}/missing", "--layer=1"],
     "error: --compare_dir {tmp}/missing: no such directory"),
]


@pytest.mark.parametrize("module, argv, expected", BAD_FLAGS,
                         ids=[f"{m}-{a[0].split('=')[0]}" for m, a, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_before_tensorflow_with_the_variable_unset(
        module, argv, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    argv = [a.format(tmp=tmp_path) for a in argv]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, f"experiments.{module}",
                             *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    seconds = time.perf_counter() - started
    assert result.returncode == cli.EXIT_BAD_INPUT, result.stderr
    assert result.stderr.splitlines() == [result.stderr.splitlines()[0]], result.stderr
    assert result.stderr.startswith(expected.format(tmp=tmp_path)), result.stderr
    assert result.stdout.strip() == "tensorflow imported: False"
    assert not os.path.exists(tmp_path / "run")
    assert seconds < 10, seconds  # about a second; the machine is shared


def test_a_normal_run_shows_no_banner_but_tensorflow_still_speaks(tmp_path):
    """A real run with the variable unset: TensorFlow is imported (and, on this CPU,
    prints its banner or not); nothing of the banner reaches stderr, and the run's own
    log lines do."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--scheme=none", "--epochs=1",
         "--image_size=16", "--train_limit=40", "--test_limit=20", "--noprogress",
         "--nopanels", f"--out_dir={tmp_path}/run"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not any(banner.is_banner(line) for line in result.stderr.splitlines()), result.stderr
    assert "none epoch 1/1: train loss" in result.stderr
