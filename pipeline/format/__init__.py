"""The shard format alone: shards.py (writer and manifest), reader.py (the one reader, and the
size/sha256 check against the manifest), vocab.py (byte vocabulary), scan.py (image scan order),
audio_codec.py (audio bytes) and errors.py (UsageError, DataError). convert/ and load/ both import
it; it imports neither."""
