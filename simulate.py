"""Structures, labels and MLIP-driven simulations. Usage: python simulate.py task=<name> ..."""

import os

import hydra

os.environ.setdefault("CAPML_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="simulate")
def main(cfg):
    from capml.tasks import dispatch

    return dispatch("simulate", cfg)


if __name__ == "__main__":
    main()
