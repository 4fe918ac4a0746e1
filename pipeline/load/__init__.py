"""Datasets of shards to batches of byte ids: reading.py (shard → Tokens, with the error policy),
packing.py (Tokens → sequences → rows), streams.py (one dataset's resumable stream), validation.py
(the finite validation pass) and loader.py (mixing, workers, the loaders). Imports format/, never
convert/."""
