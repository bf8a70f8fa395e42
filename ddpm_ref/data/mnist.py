r"""MNIST digits: the bundled 5,000-digit subset, an IDX-file reader, model scaling and image grids.

Paper: Ho, Jain, Abbeel (2020), §3.3 (data scaling): images of integers {0..255} are scaled
linearly to [-1, 1], which the discretized decoder of Eq. (13) assumes. The paper trains on
CIFAR10/CelebA-HQ/LSUN; MNIST is what a NumPy U-Net can learn on two cores.

``mnist_5k.npz`` (next to this file) holds 500 digits per class from the MNIST database
(LeCun, Cortes, Burges; CC BY-SA 3.0): ``images`` uint8 (5000, 28, 28), 0 = background,
``labels`` uint8 (5000,). The project's fixed split: for each class, in file order, the first
450 digits are training (4,500) and the last 50 test (500). Both splits keep file order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

BUNDLED = Path(__file__).parent / "mnist_5k.npz"
SPLITS = ("train", "test", "all")
SIZES = (28, 14)
N_TEST_PER_CLASS = 50

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # big-endian int32 at offset 0 of the IDX files


def load_digits(split: str = "train", size: int = 28):
    """The bundled digits: (images uint8 (N, size, size), labels uint8 (N,)).

    Args:
        split: "train" (4,500: the first 450 of each class, file order), "test" (500: the last
            50 of each class) or "all" (5,000, file order).
        size: 28 (as stored) or 14 (2x2 average pooling, rounded half up: (a+b+c+d+2) // 4).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if isinstance(size, bool) or size not in SIZES:
        raise ValueError(f"size: expected one of {SIZES}, got {size!r}")
    with np.load(BUNDLED, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]  # (5000, 28, 28), (5000,)
    if split != "all":
        is_test = np.zeros(labels.shape[0], dtype=bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)  # file order
            is_test[idx[-N_TEST_PER_CLASS:]] = True
        keep = is_test if split == "test" else ~is_test
        images, labels = images[keep], labels[keep]
    if size == 14:
        images = pool2x2(images)
    return np.ascontiguousarray(images), np.ascontiguousarray(labels)


def pool2x2(images) -> np.ndarray:
    """2x2 average pooling of uint8 images (N, H, W) with even H, W, rounded half up."""
    images = _check_uint8_images("images", images)
    N, H, W = images.shape
    if H % 2 or W % 2:
        raise ValueError(f"images: expected even height and width, got {(H, W)}")
    blocks = images.reshape(N, H // 2, 2, W // 2, 2).astype(np.uint16)  # (N, H/2, 2, W/2, 2)
    return ((blocks.sum(axis=(2, 4)) + 2) // 4).astype(np.uint8)  # (N, H/2, W/2)


def _check_uint8_images(name, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {images.dtype}")
    if images.ndim != 3 or images.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (N, H, W), got {images.shape}")
    return images


def to_model(images) -> np.ndarray:
    r"""uint8 images (N, H, W) -> float32 (N, 1, H, W) in [-1, 1], x / 127.5 - 1 (§3.3).

    No dequantization noise: the discretized decoder (Eq. 13) models the integer values directly.
    """
    images = _check_uint8_images("images", images)
    x = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # (N, H, W)
    return x[:, None, :, :]  # (N, 1, H, W)


def from_model(x) -> np.ndarray:
    """Model-space images (N, 1, H, W) or (N, H, W) -> uint8 (N, H, W): clip to [-1, 1], round."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"x: expected one channel, shape (N, 1, H, W), got {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (N, 1, H, W) or (N, H, W), got {x.shape}")
    if np.any(np.isnan(x)):
        raise ValueError("x: expected no NaN values")
    return np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic bytes, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    return raw


def _read_idx(path, magic: int, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes with ``ndim`` dimensions, validated against its header."""
    path = Path(path)
    data = _read_bytes(path)
    header = 4 + 4 * ndim  # magic number, then one big-endian int32 per dimension
    got_magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if got_magic != magic:
        raise ValueError(f"{path}: expected IDX magic number {magic}, got {got_magic}")
    if len(data) < header:
        raise ValueError(f"{path}: expected an IDX header of {header} bytes, got {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n_expected = int(np.prod(dims))
    if len(data) - header != n_expected:
        raise ValueError(
            f"{path}: header says shape {dims} ({n_expected} bytes of data), file has "
            f"{len(data) - header} (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx(images_path, labels_path=None):
    """Read the original MNIST IDX files (gzipped or raw; gzip detected by its magic bytes).

    Args:
        images_path: IDX3 file (magic 2051): uint8 (N, H, W) images.
        labels_path: optional IDX1 file (magic 2049): uint8 (N,) labels.
    Returns:
        images, or (images, labels) when labels_path is given.
    Raises:
        ValueError naming the file: wrong magic number, data length not matching the header
        (truncated file), or an image/label count mismatch.
    """
    images = _read_idx(images_path, _IMAGES_MAGIC, 3)
    if labels_path is None:
        return images
    labels = _read_idx(labels_path, _LABELS_MAGIC, 1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image in "
            f"{images_path}), got {labels.shape[0]}"
        )
    return images, labels


def image_grid(images, nrow: int, pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """Tile uint8 images (N, H, W) into one uint8 image, ``nrow`` images per row.

    The grid has ceil(N / nrow) rows; cells are separated (and surrounded) by ``pad`` pixels of
    ``pad_value``. Returns uint8 (rows * (H + pad) + pad, nrow * (W + pad) + pad).
    """
    images = _check_uint8_images("images", images)
    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"nrow: expected an integer >= 1, got {nrow!r}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad: expected an integer >= 0, got {pad!r}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value: expected an integer in 0..255, got {pad_value!r}")
    N, H, W = images.shape
    rows = -(-N // nrow)  # ceil
    grid = np.full((rows * (H + pad) + pad, nrow * (W + pad) + pad), pad_value, dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        grid[y : y + H, x : x + W] = images[i]
    return grid
