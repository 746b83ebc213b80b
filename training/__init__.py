"""Training on self-play: dataset export, LoRA fine-tuning, the self-play loop and its held-out evaluation."""
