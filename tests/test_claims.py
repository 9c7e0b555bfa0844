"""experiments.article.claims on a hand-made compare directory: each claim's paired difference and
verdict equal a computation by hand, censoring included; missing schemes are left out."""

import os

import pytest

from experiments import cli
from experiments.article import claims, sentences
from tfnorm.analysis import compare_grid
from tfnorm.run import atomic, records

SEEDS = range(3)


def make_compare_dir(root):
    rows = []
    for seed in SEEDS:
        rows.append(dict(scheme="none", seed=seed, state="complete", final_test_acc=0.50,
                         final_train_acc=0.60, epoch_to_95="",
                         **{f"nonzero_{i}": 0.5 for i in sentences.LAYERS}))
        rows.append(dict(scheme="batch", seed=seed, state="complete",
                         final_test_acc=0.90 + 0.01 * seed, final_train_acc=0.99,
                         epoch_to_95=3 + seed,
                         **{f"nonzero_{i}": 0.5 + 0.1 * (i - 2) + 0.01 * seed
                            for i in sentences.LAYERS}))
    atomic.write_csv(os.path.join(root, "runs.csv"), rows)
    records.write_config(os.path.join(root, "none", "seed_0"),
                         cli.resolve(dict(epochs=10)), {})
    return compare_grid.read_runs(str(root))


def test_claims_are_decided_by_the_paired_interval(tmp_path):
    runs = make_compare_dir(tmp_path)
    wanted = [c for c in sentences.article_claims() if {c.a, c.b} <= set(runs)]
    rows, markdown = claims.side_by_side(wanted, {"here": sentences.with_derived(runs)},
                                         epochs=10)
    by_claim = {row["claim"]: row for row in rows}
    # batch reaches 95% at epochs 3, 4, 5; none never (counted as 11): differences
    # -8, -7, -6, mean -7, s = 1, t_{0.975,2} = 4.302653: [-9.484, -4.516].
    speed = by_claim["epoch_to_95: batch < none"]
    assert speed["mean"] == pytest.approx(-7.0)
    assert speed["high"] == pytest.approx(-7.0 + 4.302653 / 3 ** 0.5, abs=1e-5)
    assert speed["censored"] == 3 and speed["verdict"] == "supported"
    # Layer 1: batch 0.4 + 0.01 seed against 0.5: differences -0.1, -0.09, -0.08.
    assert by_claim["nonzero_1: batch > none"]["verdict"] == "contradicted"
    # Layer 2: differences 0, 0.01, 0.02: the interval holds 0.
    assert by_claim["nonzero_2: batch > none"]["verdict"] == "inconclusive"
    assert by_claim["nonzero_3: batch > none"]["verdict"] == "supported"
    # Batch norm's gap (0.99 - 0.90 - 0.01 seed) is far below 0.2: no over-fitting, so the
    # test-accuracy sentence is not decided here, whatever the rule says.
    assert by_claim["final_test_acc: none > batch"]["verdict"] == (
        "not decided: no over-fitting (contradicted)")
    assert "| [C] | difference | epoch_to_95: batch < none |" in markdown
    assert "instance >" not in markdown


def test_the_command_writes_claims_and_names_what_it_left_out(tmp_path):
    make_compare_dir(tmp_path)
    from absl import flags
    flag_values = flags.FlagValues()
    claims.define_flags(flag_values)
    flag_values(["claims", f"--compare_dir={tmp_path}"])
    original, claims.FLAGS = claims.FLAGS, flag_values
    try:
        claims.main(["claims"])
    finally:
        claims.FLAGS = original
    text = open(tmp_path / "claims.md").read()
    # An absolute --compare_dir is named relative to the repository, never as given.
    assert f"from `{os.path.relpath(tmp_path, cli.REPOSITORY)}`" in text
    assert "Left out (in no setting): claims about boxcox, instance, layer." in text
    # Batch against none: non-zero and near-zero at 6 layers (12), its speed (2), movement
    # (6), update frequency (6), parameters (1), 95% by epoch 130 (3), none's movement and
    # 60% thresholds (2), none's test accuracy, final and best (2).
    assert len(atomic.read_csv(str(tmp_path / "claims.csv"))) == 12 + 2 + 6 + 6 + 1 + 3 + 2 + 2


def run_claims(compare_dir, monkeypatch, capsys):
    from runs import exit_of_main
    code = exit_of_main(claims, [f"--compare_dir={compare_dir}"], monkeypatch)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("content, code, message", [
    (b"scheme,seed,state,final_test_acc\n", 2, "holds no run; rerun experiments.article.compare"),
    (b"scheme,seed\n\xff\xfe,\x00\x81\n", 6, "unreadable (UnicodeDecodeError); rerun "
                                            "experiments.article.compare"),
    (b"a,b\n1,2\n", 6, "not compare's runs.csv (no column scheme, seed)"),
    (b"scheme,seed,final_test_acc\nnone,zero,0.5\n", 6, "line 2 is damaged (not numbers)"),
])
def test_a_runs_csv_that_is_not_compares_is_one_line(tmp_path, content, code, message,
                                                     monkeypatch, capsys):
    (tmp_path / "runs.csv").write_bytes(content)
    got, lines = run_claims(tmp_path, monkeypatch, capsys)
    assert got == code and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {tmp_path}/runs.csv: {message}"), lines


def test_a_compare_directory_whose_runs_are_gone_is_one_line(tmp_path, monkeypatch, capsys):
    make_compare_dir(tmp_path)
    import shutil
    shutil.rmtree(tmp_path / "none")
    code, lines = run_claims(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert lines == [f"error: --compare_dir {tmp_path}: none of the runs of runs.csv is there "
                     "(<scheme>/seed_<k>/config.json); run experiments.article.compare there first"]


ORDER = ("batch", "layer", "instance", "none", "boxcox")


def write_grid(root, schemes, shift):
    """A compare directory of ``schemes`` over 5 seeds: every measure a simple function of
    the scheme (its place in ORDER), the seed and ``shift`` (so two grids differ),
    config.json at the first scheme's seed 0."""
    rows = []
    for scheme in schemes:
        k = ORDER.index(scheme)
        for seed in range(5):
            rows.append(dict(
                scheme=scheme, seed=seed, state="complete", final_train_acc=0.99,
                final_test_acc=0.6 - 0.1 * k + shift + 0.001 * seed,
                best_test_acc=0.65 - 0.1 * k + shift, epoch_to_95=5,
                parameters=11088 + (5 if scheme == "boxcox" else 0),
                **{f"movement_{i}": 0.01 * i + 0.002 * seed for i in sentences.LAYERS}))
    atomic.write_csv(os.path.join(root, "runs.csv"), rows)
    records.write_config(os.path.join(root, schemes[0], "seed_0"),
                         cli.resolve(dict(epochs=10)), {})


def test_settings_side_by_side_one_with_a_base_and_the_untestable_sentences(
        tmp_path, monkeypatch):
    everything, quirk = tmp_path / "off", tmp_path / "on"
    write_grid(everything, ORDER, 0.0)
    write_grid(quirk, ("layer", "instance"), 0.05)
    from absl import flags
    out, flag_values = tmp_path / "out", flags.FlagValues()
    claims.define_flags(flag_values)
    flag_values(["claims", f"--setting=off={everything}", f"--setting=on={quirk}+{everything}",
                 f"--out_dir={out}"])
    monkeypatch.setattr(claims, "FLAGS", flag_values)
    claims.main(["claims"])
    rows = atomic.read_csv(str(out / "claims.csv"))
    by = {(r["setting"], r["claim"]): r for r in rows}
    # batch's gap is 0.99 - 0.6 - 0.001 seed: above 0.2, so test accuracy is decided. With the
    # base, "on" takes batch from "off" and layer from its own grid (0.05 higher).
    assert float(by["off", "final_test_acc: batch > layer"]["mean"]) == pytest.approx(0.1)
    assert float(by["on", "final_test_acc: batch > layer"]["mean"]) == pytest.approx(0.05)
    assert by["on", "final_test_acc: batch > layer"]["verdict"] == "supported"
    # Layers 2-4 move 0.03 on average, layers 1, 5, 6 0.04, whatever the seed: -0.01.
    middle = by["off", f"{sentences.MIDDLE_MOVEMENT}: none < 0"]
    assert float(middle["mean"]) == pytest.approx(-0.01) and middle["verdict"] == "supported"
    # Parameter counts: equal within half a parameter for batch, five more for Box-Cox.
    assert by["off", "parameters: |batch - none| < 0.5"]["verdict"] == "supported"
    assert by["off", "parameters: |boxcox - none| < 0.5"]["verdict"] == "contradicted"
    text = (out / "claims.md").read_text()
    assert "| [K] | not testable here | capacity is not measured" in text
    # Per sentence: parameters equal for batch, layer and instance, not for Box-Cox.
    assert '| [J] | "every single one of these networks (with/without) normalization schemes' \
        ' ..." | S 3 · C 1 | S 3 · C 1 |' in text
    assert ('| [K] | "Meaning their learning capacity is exactly the same." | not testable '
            'here | not testable here |') in text
    assert f"*Not tested: {sentences.BN_REASON.untested}.*" in text
    # The summary collapses a per-layer comparison into one row per setting.
    assert "| [D] | difference | movement_i: batch > none | inconclusive | inconclusive |" in text
