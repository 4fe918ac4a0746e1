"""Datasets of shards to batches of byte ids; imports format/, never convert/."""
