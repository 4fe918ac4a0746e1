"""Image byte order: the paper's patch scan and its inverse (pure numpy, invertible).

Images are stored as raw row-major RGB bytes (S·S·3). With P bytes per patch, MegaByte reads an
image as blocks of p×p pixels, p = sqrt(P/3), so that one patch is one block (p·p·3 = P bytes):
blocks in raster order, and pixels in raster order inside each block. P = 3 (p = 1) is plain
raster order, the identity.

    raster   (S, S, 3)  →  (S/p, p, S/p, p, 3)  →  (S/p, S/p, p, p, 3)  →  flat   = patch scan
"""

import math

import numpy as np


def block_side(patch_bytes: int, size: int) -> int:
    """p = sqrt(P/3), checked: P must be 3·p² and p must divide the image side S."""
    side = math.isqrt(patch_bytes // 3) if patch_bytes > 0 else 0
    if side == 0 or side * side * 3 != patch_bytes:
        raise ValueError(f"patch size {patch_bytes} is not 3·p² (e.g. 3, 12, 48, 192, 768), so it "
                         "cannot scan RGB images in p×p blocks; use raster order")
    if size % side:
        raise ValueError(f"image side {size} is not a multiple of the block side {side} (P={patch_bytes})")
    return side


def to_patch_order(pixels: bytes | np.ndarray, size: int, patch_bytes: int) -> np.ndarray:
    """Raster RGB bytes of an S×S image → the same bytes in patch-scan order, (S·S·3,) uint8."""
    blocks, side = grid(size, patch_bytes)
    image = as_array(pixels).reshape(blocks, side, blocks, side, 3)  # (by, py, bx, px, 3)
    return image.transpose(0, 2, 1, 3, 4).reshape(-1)  # (by, bx, py, px, 3) → flat


def from_patch_order(scanned: bytes | np.ndarray, size: int, patch_bytes: int) -> np.ndarray:
    """Inverse of to_patch_order: patch-scan bytes → raster RGB bytes, (S·S·3,) uint8."""
    blocks, side = grid(size, patch_bytes)
    data = as_array(scanned).reshape(blocks, blocks, side, side, 3)  # (by, bx, py, px, 3)
    return data.transpose(0, 2, 1, 3, 4).reshape(-1)  # (by, py, bx, px, 3) → flat


def grid(size: int, patch_bytes: int) -> tuple[int, int]:
    """(blocks per side, block side p)."""
    side = block_side(patch_bytes, size)
    return size // side, side


def as_array(data: bytes | np.ndarray) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data)
