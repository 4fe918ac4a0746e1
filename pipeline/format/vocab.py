"""The byte vocabulary shared by every modality.

ids 0..255 are the bytes themselves (all real data, byte 0 included); the ids above are special.
Shards store plain uint8 bytes; only batches contain the special ids.
"""

NUM_BYTES = 256
PAD_ID = 256  # padding: ignored by the loss, never a byte value
BOUNDARY_ID = 257  # document boundary, placed between packed text documents
VOCAB_SIZE = 258
