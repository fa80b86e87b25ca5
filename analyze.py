"""Analyses of data sets, models, phonons and MD. Usage: python analyze.py task=<name> ..."""

import os

import hydra

os.environ.setdefault("CAPML_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="analyze")
def main(cfg):
    from capml.tasks import dispatch

    return dispatch("analyze", cfg)


if __name__ == "__main__":
    main()
