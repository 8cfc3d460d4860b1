"""LoRA RL fine-tuning of generators with the reward: trainers, runs, LoRA export."""
