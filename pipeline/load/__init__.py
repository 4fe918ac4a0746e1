"""Datasets of shards to batches of byte ids: reading.py (shard → Tokens, with the error policy;
single samples at their member-index offsets), packing.py (Tokens → sequences → rows), order.py
(the global data order: sample tables, pieces, epochs, the mixer), streams.py (a dataset read in
order, for the validation pass), validation.py (the finite validation pass) and loader.py (the
loaders and their workers). Imports format/, never convert/."""
