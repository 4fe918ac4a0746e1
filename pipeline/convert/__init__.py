"""Raw inputs to datasets of shards: driver.py (inputs → tasks → workers → shards, resumable),
text.py, image.py (with labels.py), audio.py, and merge.py (joins --part runs). Imports format/,
never load/."""
