"""Reward-guided noise search over the generator protocol: `algorithms.py` (best-of-N, random search,
zero-order search, search over paths, noise gradient ascent), maximising a `backend.rewards` reward."""
