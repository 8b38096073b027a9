"""Training (layer 5): the run config, the one trainer and its tasks, optimizers, DDP/FSDP."""
