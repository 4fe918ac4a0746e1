"""Bytes, files and shards, in three rooms named after the data flow:

    raw inputs ──convert/──▶ shards + index.json (format/) ──load/──▶ batches of byte ids

format/ is the shard format alone; convert/ and load/ both import it and never each other.
pipeline/ imports nothing from model/, train/ or tools/.
"""
