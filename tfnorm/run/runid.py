"""What a run is: its configuration. Every file that holds a run's results (config.json,
each checkpoint, each record, a diverged status.json) carries the run's identity, and is
checked against the run before it is used (``tfnorm.run.rundir``, ``tfnorm.run.records``).
No TensorFlow here.
"""

import collections
import hashlib
import json

from tfnorm import config as run_config, schemes

# Fields that say where things are or how progress is shown, not what is computed (the
# configuration's "place" role): a run directory may be resumed with other values of these.
NOT_IDENTITY = run_config.names("place")
# Identity fields added after runs were made: what those runs' config.json lack means this.
ADDED_LATER = {"per_position_running_stats": False, "final_activation": "relu",
               "train_per_class": 0, "eval_every": 1}
# The schemes' hyperparameters every run has had as fields; one the registry gains later
# is added later too, at its default (``added_later``).
FIRST_HYPERPARAMETERS = ("affine", "boxcox_lambda", "groups")


def added_later():
    """ADDED_LATER and every run hyperparameter of the registry but the first ones, at
    its default: a field that an older config.json lacks, and that a hash leaves out at
    this value, so that adding a hyperparameter changes no run's identity."""
    found = dict(ADDED_LATER)
    for name, (default, _) in schemes.run_hyperparameters().items():
        if name not in FIRST_HYPERPARAMETERS:
            found[name] = default
    return found


RunIdentity = collections.namedtuple("RunIdentity", ["scheme", "seed", "config_hash"])
RunIdentity.__doc__ = """Who wrote a file: the scheme, the seed and ``config_hash`` of the
run's configuration. None in a field of an expected identity: not checked."""


def identity(config):
    """The part of a configuration that decides the results (a dict)."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def config_hash(config):
    """16 hex digits that change with any identity flag of ``config``. Numbers are compared
    as floats (2 and 2.0 are one value, as with ==), and a flag added later that holds
    the value runs made before it had is left out, so adding a flag changes no hash."""
    canonical, later = {}, added_later()
    for key, value in identity(config).items():
        if key in later and value == later[key]:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = repr(float(value))
        canonical[key] = value
    text = json.dumps(canonical, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_identity(config):
    """The RunIdentity of the run ``config`` describes (a resolved configuration)."""
    return RunIdentity(config["scheme"], int(config["seed"]), config_hash(config))


def describe(run):
    return f"scheme {run.scheme}, seed {run.seed}, configuration {run.config_hash}"


def identity_mismatch(found, expected):
    """Why the file of run ``found`` does not belong to run ``expected`` (one phrase), or
    None. A field of ``expected`` that is None is not checked."""
    if found is None:
        return "it names no run (written by an older version?)"
    differing = [name for name in RunIdentity._fields
                 if getattr(expected, name) is not None
                 and getattr(found, name) != getattr(expected, name)]
    if not differing:
        return None
    return (f"it belongs to another run ({describe(found)}), not to this one "
            f"({describe(expected)})")
