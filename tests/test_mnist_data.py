"""Tests for ddpm_ref.data.mnist: bundled digits, fixed split, scaling, IDX reader, grids."""

import gzip

import numpy as np
import pytest

from ddpm_ref.data import mnist


def _raw():
    with np.load(mnist.BUNDLED, allow_pickle=False) as f:
        return f["images"], f["labels"]


def test_load_all_is_the_file():
    images, labels = mnist.load_digits("all")
    raw_images, raw_labels = _raw()
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    np.testing.assert_array_equal(images, raw_images)
    np.testing.assert_array_equal(labels, raw_labels)


def test_split_sizes_and_partition():
    tr_x, tr_y = mnist.load_digits("train")
    te_x, te_y = mnist.load_digits("test")
    assert tr_x.shape == (4500, 28, 28) and te_x.shape == (500, 28, 28)
    np.testing.assert_array_equal(np.bincount(tr_y, minlength=10), np.full(10, 450))
    np.testing.assert_array_equal(np.bincount(te_y, minlength=10), np.full(10, 50))
    raw_images, raw_labels = _raw()
    for c in range(10):
        idx = np.flatnonzero(raw_labels == c)  # file order
        # first 450 of each class are training, last 50 test, file order kept
        np.testing.assert_array_equal(tr_x[tr_y == c], raw_images[idx[:450]])
        np.testing.assert_array_equal(te_x[te_y == c], raw_images[idx[450:]])


def test_size14_pooling_rounds_half_up():
    images, labels = mnist.load_digits("test", size=14)
    full, labels28 = mnist.load_digits("test")
    assert images.shape == (500, 14, 14) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, labels28)
    # one block by hand: mean of the 4 pixels, rounded half up
    block = full[7, 10:12, 12:14].astype(int)
    assert images[7, 5, 6] == (block.sum() + 2) // 4
    tiny = np.array(
        [[[0, 1], [0, 1]], [[255, 255], [255, 254]]], dtype=np.uint8
    )  # means 0.5, 254.75
    np.testing.assert_array_equal(mnist.pool2x2(tiny)[:, 0, 0], [1, 255])


def test_to_model_and_back():
    images, _ = mnist.load_digits("test")
    x = mnist.to_model(images)
    assert x.dtype == np.float32 and x.shape == (500, 1, 28, 28)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(mnist.from_model(x), images)
    np.testing.assert_array_equal(mnist.from_model(x.astype(np.float64)[:, 0]), images)
    # 0 -> -1, 255 -> 1 exactly; out-of-range values clip
    np.testing.assert_array_equal(
        mnist.from_model(np.array([[[-3.0, -1.0, 0.0, 1.0, 7.0]]])), [[[0, 0, 128, 255, 255]]]
    )


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 28, 28), np.float32),
        np.zeros((28, 28), np.uint8),
        np.zeros((0, 2, 2), np.uint8),
    ],
)
def test_to_model_rejects(bad):
    with pytest.raises(ValueError, match="images:"):
        mnist.to_model(bad)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 3, 4, 4)),
        np.zeros((2, 4), np.float32),
        np.zeros((2, 4, 4), np.uint8),
        np.full((1, 2, 2), np.nan),
    ],
)
def test_from_model_rejects(bad):
    with pytest.raises(ValueError, match="x:"):
        mnist.from_model(bad)


def test_load_digits_rejects():
    with pytest.raises(ValueError, match="split:"):
        mnist.load_digits("valid")
    with pytest.raises(ValueError, match="size:"):
        mnist.load_digits("train", size=7)


def _idx_bytes(magic, arr):
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.fixture
def idx_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    paths = {
        "img": tmp_path / "images.idx3-ubyte",
        "lab": tmp_path / "labels.idx1-ubyte",
        # gzipped, under a name that does not say so: detection is by magic bytes
        "img_gz": tmp_path / "images_gz.bin",
        "lab_gz": tmp_path / "labels.gz",
    }
    paths["img"].write_bytes(_idx_bytes(2051, images))
    paths["lab"].write_bytes(_idx_bytes(2049, labels))
    paths["img_gz"].write_bytes(gzip.compress(_idx_bytes(2051, images)))
    paths["lab_gz"].write_bytes(gzip.compress(_idx_bytes(2049, labels)))
    return images, labels, paths


def test_load_idx_raw_and_gzipped(idx_files):
    images, labels, p = idx_files
    np.testing.assert_array_equal(mnist.load_idx(p["img"]), images)
    got_x, got_y = mnist.load_idx(p["img_gz"], p["lab_gz"])
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)
    got_x, got_y = mnist.load_idx(str(p["img"]), p["lab"])
    assert got_x.dtype == np.uint8 and got_y.shape == (7,)


def test_load_idx_wrong_magic(idx_files):
    _, _, p = idx_files
    with pytest.raises(ValueError, match="labels.idx1-ubyte.*magic number 2051, got 2049"):
        mnist.load_idx(p["lab"])  # a labels file where images are expected
    with pytest.raises(ValueError, match="images.idx3-ubyte.*magic number 2049"):
        mnist.load_idx(p["img"], p["img"])


def test_load_idx_truncated(idx_files, tmp_path):
    _, _, p = idx_files
    data = p["img"].read_bytes()
    cut = tmp_path / "cut.idx"
    cut.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="cut.idx.*truncated"):
        mnist.load_idx(cut)
    short = tmp_path / "short.idx"
    short.write_bytes(data[:10])
    with pytest.raises(ValueError, match="short.idx.*header"):
        mnist.load_idx(short)
    badgz = tmp_path / "bad.gz"
    badgz.write_bytes(gzip.compress(data)[:-8])
    with pytest.raises(ValueError, match="bad.gz"):
        mnist.load_idx(badgz)


def test_load_idx_count_mismatch(idx_files, tmp_path):
    _, _, p = idx_files
    other = tmp_path / "six_labels"
    other.write_bytes(_idx_bytes(2049, np.arange(6)))
    with pytest.raises(ValueError, match="six_labels: expected 7 labels"):
        mnist.load_idx(p["img"], other)


def test_image_grid():
    images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3) + 1
    grid = mnist.image_grid(images, nrow=2, pad=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1:3, 1:4], images[0])
    np.testing.assert_array_equal(grid[1:3, 5:8], images[1])
    np.testing.assert_array_equal(grid[7:9, 1:4], images[4])
    assert np.all(grid[7:9, 5:8] == 0)  # the empty sixth cell
    assert np.all(grid[0] == 0) and np.all(grid[:, 4] == 0)  # padding
    np.testing.assert_array_equal(mnist.image_grid(images[:1], nrow=1, pad=0), images[0])
    with pytest.raises(ValueError, match="nrow:"):
        mnist.image_grid(images, nrow=0)
