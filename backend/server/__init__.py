"""The local scoring backend: an aiohttp app that owns model loading and dynamic batching.

- `settings`: what the operator configures (models by name, budgets, limits), from flags or a TOML/YAML file.
- `manager`: loads models on first use, keeps them within a memory budget (LRU eviction, pinning).
- `batcher`: one queue per model; merges requests from many clients into token-bounded batches.
- `schema`: every request field (type, limits, enum), route and error status, declared once.
- `protocol`: turns request JSON / multipart bodies into engine inputs, checked against `schema`, with one
  clear error per bad field.
- `openapi`: /openapi.json, generated from `schema`.
- `app`: the route table (mountable under a prefix on another aiohttp app, e.g. ComfyUI's server).
- `run`: `rewarddance serve` (signals, graceful shutdown).
"""
