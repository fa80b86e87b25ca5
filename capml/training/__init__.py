"""Training: the band-gap GNN (``datamodule``, ``module``, ``stages``, ``run``: Lightning
data/model modules, two-stage training, sweeps) and the MACE fine-tuning driver
(``mace_finetune``). Submodules are imported where used, so that the MACE path does
not load the GNN stack and vice versa."""
