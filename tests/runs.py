"""Helpers the end-to-end tests share: a checked run configuration, and a script's
``main`` called in this process on its own flags."""

import pytest
from absl import flags

from experiments import cli


def checked_config(base, out_dir, **overrides):
    """``cli.resolve`` of ``base`` with ``out_dir`` and ``overrides``, checked by
    ``cli.validate`` as the command line would."""
    config = cli.resolve(dict(base, out_dir=str(out_dir), **overrides))
    cli.validate(config)
    return config


def exit_of_main(module, argv, monkeypatch):
    """Run ``module.main`` on a private FlagValues parsed from ``argv``; it must exit.
    Returns the exit code."""
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    flag_values([module.__name__] + list(argv))
    monkeypatch.setattr(module, "FLAGS", flag_values)
    with pytest.raises(SystemExit) as exit_info:
        module.main([module.__name__])
    return exit_info.value.code
