"""Structures, labels and MLIP-driven simulations. Usage: python simulate.py task=<name> ..."""

import os
import sys

import hydra

from capml.utils import cli_help

os.environ.setdefault("CAPML_ROOT", os.path.dirname(os.path.abspath(__file__)))
cli_help.register()  # the task list of --help


@hydra.main(version_base="1.3", config_path="configs", config_name="simulate")
def main(cfg):
    from capml.tasks import dispatch
    from capml.utils.validation import ConfigError, check_entry

    try:
        check_entry(cfg, "simulate")
    except ConfigError as err:
        sys.exit(f"simulate.py: {err}")
    return dispatch("simulate", cfg)


if __name__ == "__main__":
    main()
