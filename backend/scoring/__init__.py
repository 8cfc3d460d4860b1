"""Scoring: prompts, answer tokens, the batched scorer, chain of thought and ranking operations."""
