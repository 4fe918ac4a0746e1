"""Raw inputs (text corpora, images, audio) to datasets of shards; imports format/, never load/."""
