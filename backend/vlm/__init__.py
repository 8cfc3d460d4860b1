"""VLM families (one file each), their registry and the loader."""
