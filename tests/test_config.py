"""tfnorm.config, a run's configuration: each default is written once (a scheme's
hyperparameters in its registry row), the flags are generated from it, and a scheme's new
hyperparameter needs its row and its maths only.

The toy hyperparameter below (``toy_scale``: y = toy_scale * (x - mean), a scheme of its
own) is added for one test by monkeypatching the registry and ``tfnorm.norms`` (where its
class would live), and removed again when the test ends: it reaches the command line's
flag, the configuration, config.json and the normalization's constructor."""

import json
import os
import subprocess
import sys

import pytest
from absl import flags

from experiments import cli
from experiments.article import train
from tfnorm import config as run_config
from tfnorm import norms, schemes
from tfnorm.run import records, runid


def test_importing_the_configuration_loads_no_tensorflow_and_no_absl():
    code = ("import sys, tfnorm.config; "
            "assert not {'tensorflow', 'absl'} & {m.split('.')[0] for m in sys.modules}")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_schemes_hyperparameter_default_is_its_rows():
    assert run_config.field("boxcox_lambda").default == schemes.default("boxcox", "boxcox_lambda")
    assert run_config.field("groups").default == schemes.default("group", "groups")
    assert run_config.field("affine").default is schemes.default("batch", "affine")
    config = run_config.resolve({})
    assert (config.boxcox_lambda, config.groups, config["affine"]) == (2.0, 4, False)
    flag_values = flags.FlagValues()
    cli.define_run_flags(flag_values)
    assert flag_values["groups"].default == 4 and flag_values["boxcox_lambda"].default == 2.0


def test_two_rows_that_disagree_on_a_run_hyperparameters_default_are_refused(monkeypatch):
    row = schemes.get("batch")
    monkeypatch.setitem(schemes.REGISTRY, "batch", row._replace(
        hyperparameters=dict(row.hyperparameters, affine=True)))
    with pytest.raises(ValueError, match="'affine'.* 2 defaults"):
        run_config.fields()


def test_a_configuration_is_frozen_and_reads_as_a_mapping():
    config = run_config.resolve({"dataset": "stl10", "scheme": "batch"})
    assert (config.epochs, config["optimizer"]) == (200, "article_adam")  # the dataset's
    with pytest.raises(AttributeError):
        config.epochs = 3
    assert config.replace(seed=2).seed == 2 and config.seed == 0
    assert dict(config) == config and list(config) == list(run_config.names())
    with pytest.raises(KeyError):
        config["nonsense"]


def test_the_fields_a_run_may_change_when_it_resumes_are_one_role():
    assert set(runid.NOT_IDENTITY) == {"out_dir", "overwrite", "data_dir", "stl10_archive",
                                       "tensorboard", "progress", "panels"}
    assert set(run_config.names("schedule")) == {"record_every", "eval_every"}
    for field in run_config.fields():
        assert field.role in run_config.ROLES and field.help, field


def test_every_enum_flag_takes_its_choices_from_the_library():
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    assert flag_values["scheme"].parser.enum_values == list(schemes.SCHEMES)
    assert flag_values["final_activation"].parser.enum_values == ["relu", "linear"]
    assert set(run_config.names()) <= set(flag_values)


class ScaledCentering(norms.Normalization):
    """y = toy_scale * (x - mean over every axis but the batch's)."""

    name = "toy"
    built = []  # the toy_scale of every instance, in order

    def __init__(self, channels, dtype, toy_scale):
        super().__init__(channels, dtype)
        self.toy_scale = float(toy_scale)
        ScaledCentering.built.append(self.toy_scale)

    def forward(self, x, training=True):
        self.check(x, training)
        y, cache = norms.center_forward(x, list(range(1, x.shape.rank)))
        return self.toy_scale * y, cache

    def backward(self, dy, cache):
        return norms.center_backward(self.toy_scale * dy, cache), []


def add_toy_hyperparameter(monkeypatch):
    """The registry's row of a scheme with a new hyperparameter, its help and default,
    and its class in tfnorm.norms: all a new hyperparameter takes."""
    monkeypatch.setattr(norms, "ScaledCentering", ScaledCentering, raising=False)
    monkeypatch.setitem(schemes.HYPERPARAMETERS, "toy_scale",
                        "The toy scheme's output scale.")
    monkeypatch.setitem(schemes.REGISTRY, "toy", schemes.Scheme(
        "toy", "norms:ScaledCentering", False, False, {"toy_scale": 0.5}, False, "any",
        "scaled per-sample centering"))


def test_a_new_hyperparameter_reaches_flag_config_file_and_constructor(tmp_path,
                                                                      monkeypatch):
    assert "toy_scale" not in run_config.names()
    hash_before = runid.config_hash(run_config.resolve({"scheme": "batch"}))
    with monkeypatch.context() as patch:
        add_toy_hyperparameter(patch)
        flag_values = flags.FlagValues()
        train.define_flags(flag_values)
        assert flag_values["toy_scale"].default == 0.5  # the flag, with the row's default
        assert "output scale" in flag_values["toy_scale"].help
        assert run_config.resolve({}).toy_scale == 0.5  # a field, with the row's default
        # At its default, a new hyperparameter changes no existing run's identity.
        assert runid.config_hash(run_config.resolve({"scheme": "batch"})) == hash_before

        out_dir = tmp_path / "toy"
        flag_values(["train", "--scheme=toy", "--toy_scale=0.25", f"--out_dir={out_dir}",
                     "--image_size=16", "--train_limit=20", "--test_limit=20", "--epochs=1",
                     "--nopanels", "--noprogress"])
        patch.setattr(train, "FLAGS", flag_values)
        ScaledCentering.built.clear()
        train.main(["train"])
        assert ScaledCentering.built == [0.25] * 5  # every normalized layer's constructor
        stored = records.read_config(str(out_dir))
        assert stored["toy_scale"] == 0.25 and stored["scheme"] == "toy"
        with open(os.path.join(out_dir, records.CONFIG_FILE)) as f:
            assert json.load(f)["flags"]["toy_scale"] == 0.25
    # Removed again: no field, no flag.
    assert "toy_scale" not in run_config.names()
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    assert "toy_scale" not in flag_values
