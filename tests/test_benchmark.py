"""experiments.bench.speed on a tiny setting: the JSON and the markdown are well formed and
hold the same numbers; bad flags stop with one line before any work. Not a timing test:
the numbers are only checked to be measured (positive, finite, consistent ratios)."""

import json
import math
import os

import pytest
from absl import flags

from experiments.bench import speed

TINY = dict(schemes="batch", rounds=2, warmup=1, batch_size=4, image_size=16, jit=False,
            keras=False, epoch_schemes="batch", train_images=12, test_images=8, eval_batch=4,
            epoch_repeats=3, pipeline_rounds=1, pipeline_steps=2)


def parsed_flags(**values):
    """The benchmark's flags in their own FlagValues, parsed from a command line."""
    flag_values = flags.FlagValues()
    speed.define_flags(flag_values)
    argv = ["benchmark"]
    for name, value in values.items():
        argv.append(f"--{name}" if value is True else f"--no{name}" if value is False
                    else f"--{name}={value}")
    flag_values(argv)
    return flag_values


def _positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_tiny_run_writes_consistent_json_and_markdown(tmp_path):
    # app.run exits with main's return value: None is exit status 0.
    assert speed.main(["benchmark"], parsed_flags(out_dir=tmp_path, **TINY)) is None

    with open(tmp_path / "benchmark.json") as f:
        stored = json.load(f)
    assert stored["machine"]["cores"] == os.cpu_count()
    assert stored["machine"]["tensorflow"]
    assert list(stored["schemes"]) == ["batch"]
    row = stored["schemes"]["batch"]
    for key in ("A", "H", "B", "D", "A_min", "B_min", "D_min"):
        assert _positive(row[key]), (key, row[key])
    assert row["A/B"] == pytest.approx(row["A"] / row["B"])
    assert row["H/B"] == pytest.approx(row["H"] / row["B"])
    assert row["A/H"] == pytest.approx(row["A"] / row["H"])
    assert row["H/B_p10"] <= row["H/B_p90"]
    assert row["A/D"] == pytest.approx(row["A"] / row["D"])
    assert "C_A" not in row and "E" not in row  # --nojit --nokeras

    epoch = stored["epochs"]["batch"]
    assert epoch["train_steps"] == TINY["train_images"] // TINY["batch_size"]
    assert epoch["test_images"] == TINY["test_images"]
    for key in ("epoch_seconds", "train_seconds", "record_step_ms", "train_step_ms",
                "record_save_ms", "panels_ms", "pipeline_step_ms", "memory_step_ms"):
        assert _positive(epoch[key]), (key, epoch[key])
    assert epoch["train_seconds"] < epoch["epoch_seconds"]
    assert len(epoch["epoch_seconds_all"]) == 3
    assert epoch["epoch_seconds"] == sorted(epoch["epoch_seconds_all"])[1]  # the median
    # Recording = the record step's extra time + saving the record + drawing its panels.
    assert epoch["record_fraction_of_epoch"] == pytest.approx(
        epoch["record_step_fraction_of_epoch"] + epoch["panels_fraction_of_epoch"])
    assert epoch["panels_fraction_of_epoch"] == pytest.approx(
        (epoch["record_save_ms"] + epoch["panels_ms"]) / 1e3 / epoch["epoch_seconds"])

    tracing = stored["tracing"]["batch"]
    for name in speed.TRACED:
        assert _positive(tracing[f"{name}_first_ms"]) and _positive(tracing[f"{name}_later_ms"])
        assert tracing[f"{name}_traces"] == 1, name  # none again on the second epoch
    assert tracing["first_calls_s"] == pytest.approx(
        sum(tracing[f"{name}_first_ms"] for name in speed.TRACED) / 1e3)

    markdown = (tmp_path / "benchmark.md").read_text()
    assert stored["machine"]["cpu"] in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| batch |")]
    assert len(table) == 3  # the step table, the tracing table and the epoch table
    cells = [cell.strip() for cell in table[0].strip("|").split("|")]
    # | scheme | H | B | H/B [p10, p90] | H/B <= 1.00 | A | A/H | A/B | D | A/D | C_A | C_B | E |
    assert float(cells[1]) == pytest.approx(row["H"], abs=0.006)
    assert float(cells[2]) == pytest.approx(row["B"], abs=0.006)
    assert float(cells[3].split()[0]) == pytest.approx(row["H/B"], abs=0.006)
    assert float(cells[5]) == pytest.approx(row["A"], abs=0.006)
    assert float(cells[7]) == pytest.approx(row["A/B"], abs=0.006)
    assert cells[10] == cells[11] == cells[12] == "-"  # C_A, C_B, E not measured
    tracing_cells = [cell.strip() for cell in table[1].strip("|").split("|")]
    assert [int(tracing_cells[i]) for i in (3, 6, 9)] == [1, 1, 1]
    epoch_cells = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert float(epoch_cells[1]) == pytest.approx(epoch["epoch_seconds"], abs=0.006)


@pytest.mark.parametrize("overrides,named", [
    (dict(schemes="batch,nonsense"), "--schemes"),
    (dict(rounds=0), "--rounds"),
    (dict(batch_size=1), "--batch_size"),
    (dict(epoch_schemes="batch", train_images=3), "--train_images"),
])
def test_bad_flags_stop_with_one_line_before_any_work(tmp_path, capsys, overrides, named):
    out_dir = tmp_path / "out"
    flag_values = parsed_flags(out_dir=out_dir, **{**TINY, **overrides})
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["benchmark"], flag_values)
    assert exit_info.value.code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert not (out_dir / "benchmark.json").exists()


def test_unwritable_out_dir_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["benchmark"], parsed_flags(out_dir=blocker / "out", **TINY))
    assert exit_info.value.code != 0
    assert "--out_dir" in capsys.readouterr().err
