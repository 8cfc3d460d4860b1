"""Reward-guided noise search over the generator protocol: `rewards.py` (what is maximised) and
`algorithms.py` (best-of-N, random search, zero-order search, search over paths, noise gradient ascent)."""
