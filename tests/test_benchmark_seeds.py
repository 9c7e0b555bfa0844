"""experiments.bench.seeds_cost: the pairs alternate their order, every compare writes
into a directory of its own, the ratios are taken pair by pair (bad flags: test_cli)."""

import sys

import pytest

from experiments import cli
from experiments.bench import seeds_cost

CONFIG = dict(schemes=["none", "batch"], seeds=5, pairs=3, compare_flags=["--epochs=2"],
              out_dir="unused")


def test_pairs_alternate_use_fresh_directories_and_give_pair_by_pair_ratios():
    calls = []
    seconds = {1: [(10.0, 20.0), (12.0, 22.0), (11.0, 21.0)],
               5: [(30.0, 70.0), (18.0, 40.0), (33.0, 75.0)]}

    def fake_run(command):
        seeds = int(next(a for a in command if a.startswith("--seeds=")).split("=")[1])
        out_dir = next(a for a in command if a.startswith("--out_dir=")).split("=", 1)[1]
        assert "--epochs=2" in command and "--schemes=none,batch" in command
        calls.append((seeds, out_dir))
        return seconds[seeds].pop(0)

    pairs = seeds_cost.measure(CONFIG, run=fake_run)
    assert [s for s, _ in calls] == [1, 5, 5, 1, 1, 5]
    assert len({d for _, d in calls}) == 6
    assert [p["wall_ratio"] for p in pairs] == [3.0, 1.5, 3.0]
    assert [p["cpu_ratio"] for p in pairs] == [3.5, 40 / 22, 75 / 21]
    result = seeds_cost.summarize(CONFIG, pairs)
    assert result["median"]["wall_ratio"] == 3.0 and not result["met"]
    text = seeds_cost.markdown(result, "cmd")
    assert "**3.00**" in text and "not met" in text


def test_timed_counts_the_childs_cpu_and_names_a_failure():
    wall, cpu = seeds_cost.timed(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.3: pass"])
    assert cpu >= 0.25 and wall >= cpu * 0.5
    with pytest.raises(cli.ConfigError, match="boom"):
        seeds_cost.timed([sys.executable, "-c",
                               "import sys; sys.exit('x y\\nboom')"])


def test_the_command_times_real_compares_and_writes_its_report(tmp_path, monkeypatch):
    """One pair of real (tiny) compare commands: both finish, and the report holds their
    seconds and ratios."""
    import json

    from absl import flags

    flag_values = flags.FlagValues()
    seeds_cost.define_flags(flag_values)
    flag_values(["benchmark_seeds", "--schemes=none", "--seeds=2", "--pairs=1",
                 "--compare_flags=--epochs=1,--image_size=16,--train_limit=40,--test_limit=20,"
                 "--jobs=1,--nopanels", f"--out_dir={tmp_path}"])
    monkeypatch.setattr(seeds_cost, "FLAGS", flag_values)
    seeds_cost.main(["benchmark_seeds"])
    with open(tmp_path / "seeds_cost.json") as f:
        result = json.load(f)
    (pair,) = result["pairs"]
    assert pair["many_wall"] > 0 and pair["one_wall"] > 0 and pair["one_cpu"] > 0
    assert pair["wall_ratio"] == pair["many_wall"] / pair["one_wall"]
    text = (tmp_path / "seeds_cost.md").read_text()
    assert "--compare_flags=--epochs=1" in text and "(the target is for --seeds=5)" in text
