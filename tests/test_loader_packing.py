"""Loader building blocks: packers, modality transforms, shard splitting, config validation."""

import numpy as np
import pytest
import torch

from pipeline.format.errors import DataError
from pipeline.load.loader import LoaderConfig
from pipeline.load.packing import (BOUNDARY_PART, ConcatPacker, Transform, WindowPacker, decode_carry,
                              decode_rows, encode_carry, encode_rows, to_ids)
from pipeline.format.scan import from_patch_order
from pipeline.format.vocab import BOUNDARY_ID, PAD_ID


def pack_all(packer, tokens_list) -> list[list[int]]:
    """Run a packer over whole samples; sequences as id lists (the flushed one included)."""
    out = []
    for tokens in tokens_list:
        offset = 0
        while offset < len(tokens):
            sequence, offset = packer.step(tokens, offset)
            if sequence is not None:
                out.append(np.concatenate(sequence).tolist())
    last = packer.flush()
    if last is not None:
        out.append(np.concatenate(last).tolist())
    return out


def text_meta(doc: bytes) -> dict:
    return {"modality": "text", "length": len(doc), "source": "t"}


def test_concat_joins_documents_with_boundaries_and_cuts_every_t():
    docs = [b"a" * 5, b"", b"bcdefghijklmnopq", b"xyz"]
    transform = Transform("text", seq_len=8, patch_size=4)
    sequences = pack_all(ConcatPacker(8), [transform(text_meta(d), d) for d in docs])
    stream = [x for d in docs for x in [*d, BOUNDARY_ID]]
    assert [len(s) for s in sequences] == [8, 8, 8, 4]  # only the last is short (PAD-padded later)
    assert sum(sequences, []) == stream


def test_document_packing_never_mixes_documents():
    docs = [b"a" * 5, b"b" * 9]
    transform = Transform("text", seq_len=8, patch_size=4)
    sequences = pack_all(WindowPacker(8), [transform(text_meta(d), d) for d in docs])
    assert sequences == [[97] * 5 + [BOUNDARY_ID], [98] * 8, [98, BOUNDARY_ID]]


def test_audio_windows_hold_whole_frames_even_when_t_is_odd():
    pcm = bytes(range(40))
    meta = {"modality": "audio", "length": 40, "encoding": "pcm16", "source": "a"}
    sequences = pack_all(WindowPacker(15), [Transform("audio", seq_len=15, patch_size=5)(meta, pcm)])
    assert [len(s) for s in sequences] == [14, 14, 12]  # 7 frames of 2 bytes; never half a frame
    assert sum(sequences, []) == list(pcm)
    mulaw = Transform("audio", 15, 5)({**meta, "encoding": "mulaw8"}, pcm)
    assert mulaw.window == 15
    with pytest.raises(DataError, match="encoding"):
        Transform("audio", 15, 5)({**meta, "encoding": "flac"}, pcm)


def test_image_patch_order_is_invertible_and_padded_with_pad_only():
    size, patch = 4, 12
    pixels = np.random.default_rng(0).integers(0, 256, size * size * 3, dtype=np.uint8).tobytes()
    meta = {"modality": "image", "length": len(pixels), "height": size, "width": size, "channels": 3}
    tokens = Transform("image", seq_len=96, patch_size=patch, image_order="patch")(meta, pixels)
    [sequence] = pack_all(WindowPacker(96), [tokens])
    assert from_patch_order(np.array(sequence, np.uint8), size, patch).tobytes() == pixels
    row = decode_rows(encode_rows([tokens.slice(0, len(tokens))], 96))[0].tolist()
    assert row[:48] == sequence and row[48:] == [PAD_ID] * 48
    raster = Transform("image", seq_len=48, patch_size=patch)(meta, pixels)
    assert bytes(np.concatenate(raster.slice(0, 48)).tolist()) == pixels
    # longer than the context: 24-byte segments, one per sequence, the image's bytes in order
    segments = pack_all(WindowPacker(24), [Transform("image", seq_len=24, patch_size=patch)(meta, pixels)])
    assert [len(s) for s in segments] == [24, 24] and bytes(sum(segments, [])) == pixels


def test_byte_zero_is_data_and_carry_survives_json():
    transform = Transform("text", seq_len=8, patch_size=4)
    packer = ConcatPacker(8)
    sequence, offset = packer.step(transform(text_meta(b"\0\0\0"), b"\0\0\0"), 0)
    assert sequence is None and offset == 4
    carry = decode_carry(encode_carry(packer.carry))
    assert np.concatenate(carry).tolist() == [0, 0, 0, BOUNDARY_ID]
    row = decode_rows(encode_rows([carry], 8))[0].tolist()
    assert row == [0, 0, 0, BOUNDARY_ID] + [PAD_ID] * 4  # byte 0 stays a byte; PAD only after


def test_rows_from_workers_decode_to_the_same_ids():
    """Workers pass bytes + lengths + the few ids above 255; the main process rebuilds int64."""
    sequences = [[np.frombuffer(b"abc", np.uint8), BOUNDARY_PART, np.array([0, 257, 256, 7], np.uint16)],
                 [], [np.full(10, 255, np.uint8)]]
    ids = to_ids(sequences, 10)
    assert ids.dtype == torch.int64
    assert ids.tolist() == [[97, 98, 99, BOUNDARY_ID, 0, BOUNDARY_ID, PAD_ID, 7, PAD_ID, PAD_ID],
                            [PAD_ID] * 10, [255] * 10]
    assert torch.equal(decode_rows(encode_rows(sequences, 10)), ids)


@pytest.mark.parametrize("change, message", [
    ({"datasets": []}, "at least one"),
    ({"weights": [1.0]}, "one weight per dataset"),
    ({"weights": [1.0, 0.0]}, "positive"),
    ({"seq_len": 100, "patch_size": 8}, "multiple of patch_size"),
    ({"micro_batch_size": 0}, "micro_batch_size must be a positive"),
    ({"num_workers": -1}, "num_workers"),
    ({"text_packing": "pack"}, "concat, document"),
    ({"on_error": "ignore"}, "raise, skip"),
    ({"image_order": "patch", "patch_size": 8, "seq_len": 64}, "3·p²"),
])
def test_config_errors_say_what_to_change(change, message):
    arguments = {"datasets": ["a", "b"], "seq_len": 64, "patch_size": 8, **change}
    with pytest.raises(ValueError, match=message):
        LoaderConfig(**arguments)
