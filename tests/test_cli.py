"""The command line's first impression, on any CPU: a bad flag is one line on stderr and
exit 2, before TensorFlow is imported, whether or not TF_CPP_MIN_LOG_LEVEL is set; and
TensorFlow's start-up banner (printed once per native library that loads absl logging,
twice on an Intel AVX-512 machine) never reaches the terminal, while everything else it
prints does. The banner filter is fed a captured banner, so it is tested even on a
machine whose TensorFlow prints none.

(The study scripts' bad flags are in tests/test_studies_depth.py, with the same wrapper.)"""

import os
import signal
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
        "\tan indented line after a real error\n")
# A failing kernel's C++ log (the error Python raises too), captured on a full disk during
# a checkpoint save and from a failed forward check of Box-Cox, then in TF's older format.
KERNEL_ERRORS = (
    "W0000 00:00:1796198553.764506    3593 op_kernel.cc:1858] OP_REQUIRES failed at "
    "save_restore_v2_ops.cc:163 : RESOURCE_EXHAUSTED: /tmp/run/checkpoints/ckpt-2_temp/"
    "part-00000-of-00001.data-00000-of-00001.tempstate10983481860428999297; No space left on "
    "device\n"
    "W0000 00:00:1796198553.764589    3593 local_rendezvous.cc:412] Local rendezvous is "
    "aborting with status: RESOURCE_EXHAUSTED: /tmp/run/checkpoints/ckpt-2_temp/part-00000-"
    "of-00001.data-00000-of-00001.tempstate10983481860428999297; No space left on device\n"
    "W0000 00:00:1796198517.989613    3117 local_rendezvous.cc:412] Local rendezvous is "
    "aborting with status: INVALID_ARGUMENT: assertion failed: [Box-Cox input must be above "
    "-1 (x + 1 > 0); got a value at or below it.  ] [x (add_8:0) = ] [[[[-nan -nan]]]]\n"
    "\t [[{{function_node assert_positive_1_assert_less_Assert_AssertGuard_false_468}}{{node "
    "assert_positive_1/assert_less/Assert/AssertGuard/Assert}}]]\n"
    "2026-11-28 08:00:00.000000: W tensorflow/core/framework/op_kernel.cc:1857] OP_REQUIRES"
    " failed at save_restore_v2_ops.cc:160 : RESOURCE_EXHAUSTED: x; No space left on device\n")


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
    text = (captured + KEPT[:120] + captured + KERNEL_ERRORS + KEPT[120:] + captured
            + KERNEL_ERRORS + "a last line without end")
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
    ("article.train", ["--scheme=group", "--groups=5", "--out_dir={tmp}/run"],
     "error: --groups=5: does not divide the network width 16 (use 1, 2, 4, 8 or 16)"),
    ("article.train", ["--epochs=0", "--out_dir={tmp}/run"], "error: --epochs=0: must be a positive"),
    ("article.train", ["--seed=-1", "--out_dir={tmp}/run"], "error: --seed=-1: must be between 0"),
    ("article.train", ["--cpu_devices=2", "--out_dir={tmp}/run"],
     "error: --cpu_devices=2: applies to --strategy=mirrored only"),
    ("article.compare", ["--seeds=0", "--out_dir={tmp}/run"], "error: --seeds=0: must be a positive"),
    ("article.compare", ["--schemes=none,bn", "--out_dir={tmp}/run"],
     "error: --schemes: unknown scheme 'bn'"),
    ("article.panels", ["--run_dir={tmp}/missing"], "error: --run_dir {tmp}/missing: no such"),
    ("bench.speed", ["--rounds=0", "--out_dir={tmp}/run"], "error: --rounds=0: must be a"),
    ("bench.seeds_cost", ["--seeds=1", "--out_dir={tmp}/run"],
     "error: --seeds=1: nothing to compare with --seeds=1"),
    ("bench.seeds_cost", ["--compare_flags=--out_dir=x", "--out_dir={tmp}/run"],
     "error: --compare_flags: '--out_dir=x' is not a compare flag"),
    ("article.overfit", ["--train_per_class=5", "--out_dir={tmp}/run", "--results_dir={tmp}/res"],
     "error: --train_per_class=5: 50 training images are not whole batches of 20"),
    ("article.crosspanels", ["--compare_dir={tmp}/missing", "--layer=1"],
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
        [sys.executable, "-m", "experiments.article.train", "--scheme=none", "--epochs=1",
         "--image_size=16", "--train_limit=40", "--test_limit=20", "--noprogress",
         "--nopanels", f"--out_dir={tmp_path}/run"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not any(banner.is_banner(line) for line in result.stderr.splitlines()), result.stderr
    assert "none epoch 1/1: train loss" in result.stderr


def test_a_failing_kernels_cpp_log_is_dropped_and_the_rest_kept():
    """A full disk during a checkpoint save, a failed forward check: TensorFlow logs the
    kernel's error in C++ and Python raises it, which the script says in its one line."""
    assert pump(KERNEL_ERRORS) == ""
    assert pump(KEPT + KERNEL_ERRORS + KEPT, chunk=5) == KEPT + KEPT
    assert banner.is_kernel_error(KERNEL_ERRORS.splitlines()[0])
    assert not any(banner.is_kernel_error(line) for line in KEPT.splitlines())


def test_no_space_names_the_checkpoint_tensorflow_was_writing():
    from tfnorm.run import runner
    text = KERNEL_ERRORS.splitlines()[0]
    assert runner._written_by_tensorflow(text) == "/tmp/run/checkpoints/ckpt-2"
    assert runner._written_by_tensorflow("/a/b.txt; No space left on device") == "/a/b.txt"
    assert runner._written_by_tensorflow("something else") is None


# Every script's bad flag is refused before TensorFlow, scipy or matplotlib load (each
# costs a second or more of start-up); this prints which of them were imported at exit.
HEAVY = ("import atexit, runpy, sys\n"
         "atexit.register(lambda: print('imported:', [m for m in ('tensorflow', 'scipy', "
         "'matplotlib') if m in sys.modules]))\n"
         "sys.argv = sys.argv[1:]\n"
         "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")

QUICK_REFUSALS = [
    ("article.train", ["--out_dir={tmp}/a_file/run"], 2, "error: --out_dir {tmp}/a_file/run: cannot "
                                                 "be written"),
    ("article.compare", ["--out_dir={tmp}/a_file/run"], 2, "error: --out_dir {tmp}/a_file/run: "
                                                   "cannot be written"),
    ("article.compare", ["--baseline=all", "--out_dir={tmp}/run"], 2, "error: --baseline=all: "),
    ("article.claims", ["--compare_dir={tmp}/missing"], 2, "error: --compare_dir {tmp}/missing: no "
                                                   "runs.csv"),
    ("article.deadlogits", ["--compare_dir={tmp}/missing"], 2, "error: --compare_dir {tmp}/missing: "
                                                       "no such directory"),
    ("article.quirk", ["--off_dir={tmp}/missing", "--on_dir={tmp}/missing", "--out_dir={tmp}/run"], 2,
     "error: "),
    ("article.nonzero", ["--run_dir={tmp}/missing"], 2, "error: --run_dir {tmp}/missing: no such"),
    ("article.panels", ["--run_dir={tmp}/missing"], 2, "error: --run_dir {tmp}/missing: no such"),
    ("article.crosspanels", ["--compare_dir={tmp}/missing", "--layer=1"], 2,
     "error: --compare_dir {tmp}/missing: no such directory"),
    ("papers.shattered", ["--bias_std=nan", "--out_dir={tmp}/run"], 2,
     "error: --bias_std=nan: must be a finite number"),
    ("bench.speed", ["--image_size=100000", "--out_dir={tmp}/run"], 5,
     "error: --image_size=100000 with --batch_size=20: needs about "),
]


@pytest.mark.parametrize("module, argv, code, expected", QUICK_REFUSALS,
                         ids=[f"{m}-{a[0].split('=')[0]}" for m, a, _, _ in QUICK_REFUSALS])
def test_a_refusal_loads_no_tensorflow_scipy_or_matplotlib(module, argv, code, expected,
                                                           tmp_path):
    """A bad flag, a bad --out_dir (a file where a folder must be made), an input that is
    not there, a NaN float, an image that cannot fit in memory: one line, its exit code,
    and none of the slow imports (so it answers in well under a second on 2 cores)."""
    (tmp_path / "a_file").write_text("not a directory")
    argv = [a.format(tmp=tmp_path) for a in argv]
    result = subprocess.run([sys.executable, "-c", HEAVY, f"experiments.{module}", *argv],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(tmp=tmp_path)), lines
    assert result.stdout.strip() == "imported: []"
    assert not os.path.exists(tmp_path / "run")


def _script_modules():
    """Every command, as "<group>.<name>" under experiments/: the modules that run as a
    script (``if __name__ == "__main__"``) and define their flags; helpers left out."""
    names = []
    for group in ("article", "papers", "bench"):
        folder = os.path.join(ROOT, "experiments", group)
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".py")):
            with open(os.path.join(folder, name)) as source:
                text = source.read()
            if 'if __name__ == "__main__":' in text and "def define_flags" in text:
                names.append(f"{group}.{name[:-3]}")
    return names


def _float_flags(module):
    import importlib

    from absl import flags
    script = importlib.import_module(f"experiments.{module}")
    flag_values = flags.FlagValues()
    if hasattr(script, "STUDY"):
        from experiments import study
        study.define_flags(script.STUDY, flag_values)
    else:
        script.define_flags(flag_values)
    return flag_values, [name for name in flag_values
                         if isinstance(flag_values[name].parser, flags.FloatParser)]


def test_every_float_flag_of_every_script_must_be_finite(capsys):
    """NaN and inf are refused in one line for every float flag of every script (a NaN
    --bias_std would pass a check like 'must not be negative', then run and decide)."""
    checked = []
    for module in _script_modules():
        for value in ("nan", "inf", "-inf"):
            flag_values, names = _float_flags(module)
            for name in names:
                with pytest.raises(SystemExit) as refused:
                    cli.parse_flags_or_fail([module, f"--{name}={value}"], flag_values)
                assert refused.value.code == 2
                line = capsys.readouterr().err.strip()
                assert line == f"error: --{name}={float(value)}: must be a finite number"
                flag_values.unparse_flags()
                checked.append(f"{module} --{name}")
    assert "papers.shattered --bias_std" in checked and "article.train --learning_rate" in checked
    assert "papers.saturation --saturation_threshold" in checked, checked


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/<pid>/maps")
def test_a_ctrl_c_while_the_script_loads_is_one_line_and_130(tmp_path):
    """SIGINT while compare is still importing (numpy's library just mapped: the flags and
    the stop handler of the old start-up were a long way off): one line, exit 130, no
    KeyboardInterrupt traceback, nothing done."""
    out_dir = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "experiments.article.compare", "--seeds=1",
                                "--schemes=none", f"--out_dir={out_dir}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while process.poll() is None and time.time() < deadline:
        try:
            with open(f"/proc/{process.pid}/maps") as f:
                if "_multiarray_umath" in f.read():
                    break
        except OSError:
            pass
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == ["error: interrupted before any work began; rerun the same "
                                   "command to resume"]
    assert not out_dir.exists()
