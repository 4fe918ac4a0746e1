"""The shard format alone: the dataset layout and manifest, the writer, the one reader, where
datasets live (a path or a URL), and the byte-level facts every room shares (the vocabulary, the
image scan order, the audio codec, the expected errors). convert/ and load/ both import it; it
imports neither."""
