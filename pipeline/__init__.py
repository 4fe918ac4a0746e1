"""Bytes, files and shards: converters, the shard format, the streaming loader.

pipeline/ imports nothing from model/ or train/.
"""
