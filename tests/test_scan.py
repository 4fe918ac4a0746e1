"""Patch-scan order (pipeline/format/scan.py): exact inverse, the identity case, a hand-checked example, errors."""

import numpy as np
import pytest

from pipeline.format.scan import block_side, from_patch_order, to_patch_order


@pytest.mark.parametrize("size, patch_bytes", [(4, 3), (4, 12), (8, 48), (16, 192), (16, 768), (12, 108),
                                               (64, 768), (640, 3 * 16 * 16)])
def test_patch_scan_is_exactly_inverted(size, patch_bytes):
    raster = np.random.default_rng(size + patch_bytes).integers(0, 256, size * size * 3, dtype=np.uint8)
    scanned = to_patch_order(raster.tobytes(), size, patch_bytes)
    assert scanned.dtype == np.uint8 and scanned.shape == (size * size * 3,)
    assert np.array_equal(from_patch_order(scanned, size, patch_bytes), raster)
    assert np.array_equal(from_patch_order(scanned.tobytes(), size, patch_bytes), raster)
    if 3 < patch_bytes < size * size * 3:  # more than one pixel per block and more than one block:
        assert not np.array_equal(scanned, raster)  # a real reordering, not the identity


def test_three_bytes_per_patch_is_raster_order():
    raster = np.arange(5 * 5 * 3, dtype=np.uint8)
    assert np.array_equal(to_patch_order(raster, 5, 3), raster)
    assert np.array_equal(from_patch_order(raster, 5, 3), raster)


def test_hand_checked_example():
    # a 4×4 image whose pixel n (row-major) holds the bytes (n, 100+n, 200+n); P = 12 → 2×2 blocks
    pixel = np.arange(16)
    raster = np.stack([pixel, 100 + pixel, 200 + pixel], axis=1).astype(np.uint8).reshape(-1)  # (48,)
    # block (0,0) holds pixels 0 1 / 4 5, block (0,1) 2 3 / 6 7, block (1,0) 8 9 / 12 13, (1,1) 10 11 / 14 15
    order = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    expected = np.array([[n, 100 + n, 200 + n] for n in order], dtype=np.uint8).reshape(-1)
    assert np.array_equal(to_patch_order(raster.tobytes(), 4, 12), expected)
    assert np.array_equal(from_patch_order(expected, 4, 12), raster)


def test_one_patch_is_one_block():
    size, patch_bytes = 8, 48  # p = 4
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:4, 4:] = 7  # the top-right block: the second patch of the scan
    scanned = to_patch_order(image.reshape(-1), size, patch_bytes).reshape(-1, patch_bytes)  # (patches, P)
    assert scanned[1].tolist() == [7] * patch_bytes
    assert scanned[[0, 2, 3]].sum() == 0


@pytest.mark.parametrize("patch_bytes, size, message", [
    (4, 8, "not 3·p²"),  # not a multiple of 3
    (6, 8, "not 3·p²"),  # 3·2, 2 not a square
    (24, 8, "not 3·p²"),
    (27, 8, "not a multiple of the block side 3"),  # p = 3 does not divide 8
])
def test_bad_patch_sizes_are_clear_errors(patch_bytes, size, message):
    with pytest.raises(ValueError, match=message):
        block_side(patch_bytes, size)
    with pytest.raises(ValueError, match=message):
        to_patch_order(bytes(size * size * 3), size, patch_bytes)
    with pytest.raises(ValueError, match=message):
        from_patch_order(bytes(size * size * 3), size, patch_bytes)


@pytest.mark.parametrize("patch_bytes", [0, -3])
def test_non_positive_patch_sizes_are_clear_errors(patch_bytes):
    with pytest.raises(ValueError, match="not 3·p²"):
        block_side(patch_bytes, 8)


def test_wrong_length_is_an_error():
    with pytest.raises(ValueError):
        to_patch_order(bytes(4 * 4 * 3 - 1), 4, 12)
