"""Training your own RewardDance reward model: preference data, the generative objectives, the training
loop (LoRA or full), evaluation, and a synthetic preference set that shows learning on a CPU."""
