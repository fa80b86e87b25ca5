"""Training: Lightning modules and data modules; the MACE fine-tuning driver."""
