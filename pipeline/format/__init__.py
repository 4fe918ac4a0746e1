"""The shard format alone: writer, reader, manifest, verification, byte vocabulary, image scan
order, audio byte codec and the errors that name damaged data. convert/ and load/ both import it."""
