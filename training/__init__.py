"""Training and fine-tuning of VGGT: multi-task losses, the trainer, checkpoints, LoRA and torchrun support.

Entry point: `python -m training.train --config configs/tiny_synthetic.yaml key=value ...`
(or the same under `torchrun --nproc_per_node=N`).
"""
