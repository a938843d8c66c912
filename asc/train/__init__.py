"""Training: recipes, the loop (AMP, DDP, checkpoints), schedules and batch augmentation."""
