"""Datasets of shards to batches of byte ids, in one global order that any cluster shape can
resume (loader.py has the diagram). Imports format/, never convert/."""
