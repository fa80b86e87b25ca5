"""Model training. Usage: python train.py [model=gnn|gnn_paper] [stage=...] [-m sweep=...];
the MACE potential: python train.py -cn train_mace"""

import os
import sys

import hydra

os.environ.setdefault("CAPML_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    from capml.utils.validation import ConfigError, check_entry

    try:
        check_entry(cfg, "train")
    except ConfigError as err:
        sys.exit(f"train.py: {err}")
    if cfg.model.get("kind") == "mace":
        from capml.training import mace_finetune

        return mace_finetune.run(cfg)
    from capml.training.run import objective

    return objective(cfg)


if __name__ == "__main__":
    main()
