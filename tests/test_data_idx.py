"""IDX reading and validation, and loading Fashion-MNIST (tools/data/idx.py)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from droppos.tools.data.idx import (
    CLASSES,
    DEFAULT_SOURCE,
    DataError,
    load_fashion_mnist,
    parse_idx,
    read_idx,
    write_idx,
)

HAVE_FMNIST = (DEFAULT_SOURCE / "train-images-idx3-ubyte.gz").is_file()


def idx_bytes(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file written by hand from the format's definition (independent of write_idx)."""
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + payload


def test_reads_hand_written_uint8_raw_and_gzip(tmp_path):
    payload = bytes(range(24))
    raw = idx_bytes(0x08, (2, 3, 4), payload)
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        arr = read_idx(tmp_path / name)
        assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
        np.testing.assert_array_equal(arr.ravel(), np.arange(24))


def test_big_endian_types_are_decoded():
    arr = parse_idx(idx_bytes(0x0B, (3,), struct.pack(">3h", -2, 300, 7)))
    assert arr.dtype == np.int16 and arr.tolist() == [-2, 300, 7]
    arr = parse_idx(idx_bytes(0x0D, (2,), struct.pack(">2f", 1.5, -0.25)))
    assert arr.dtype == np.float32 and arr.tolist() == [1.5, -0.25]


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_write_read_roundtrip(tmp_path, dtype):
    a = (np.arange(30).reshape(5, 6) - 7).astype(dtype)
    write_idx(tmp_path / "x.gz", a)
    b = read_idx(tmp_path / "x.gz")
    assert b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)


def test_truncated_file_names_file_and_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(0x08, (10, 28, 28), bytes(10 * 28 * 28 - 5)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated IDX file .*needs 7856"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    full = gzip.compress(idx_bytes(0x08, (1000,), bytes(1000)))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match=r"picture.png: not an IDX file \(magic number 89504e47"):
        read_idx(path)


def test_unknown_dtype_code_and_bad_header(tmp_path):
    with pytest.raises(DataError, match="unknown IDX dtype code 0x07"):
        parse_idx(idx_bytes(0x07, (1,), b"\x00"), "f")
    with pytest.raises(DataError, match="0 dimensions"):
        parse_idx(bytes([0, 0, 8, 0]), "f")
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0, 0, 1]), "f")
    with pytest.raises(DataError, match="only 2 bytes"):
        parse_idx(b"\x00\x00", "f")


def test_trailing_bytes(tmp_path):
    with pytest.raises(DataError, match="3 trailing bytes"):
        parse_idx(idx_bytes(0x08, (4,), bytes(7)), "f")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"nothere.gz: file not found; install it with `apt-get install dataset-fashion-mnist`"):
        read_idx(tmp_path / "nothere.gz")


def write_split(folder, prefix, images, labels):
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_load_fashion_mnist_from_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    write_split(tmp_path, "t10k", images, labels)
    got_images, got_labels = load_fashion_mnist(tmp_path, "t10k")
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64 and got_labels.tolist() == labels.tolist()
    # raw (uncompressed) files are found too
    write_idx(tmp_path / "train-images-idx3-ubyte", images, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels, compress=False)
    assert load_fashion_mnist(tmp_path, "train")[0].shape == (20, 28, 28)


def test_load_fashion_mnist_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(DataError) as e:
        load_fashion_mnist(tmp_path / "nope", "train")
    msg = str(e.value)
    assert str(tmp_path / "nope") in msg and "apt-get install dataset-fashion-mnist" in msg and "--source DIR" in msg
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: Fashion-MNIST file not found.*--source DIR"):
        load_fashion_mnist(tmp_path, "train")


def test_load_fashion_mnist_inconsistent_files(tmp_path):
    images = np.zeros((5, 28, 28), np.uint8)
    write_split(tmp_path, "train", images, np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: 4 labels but train-images-idx3-ubyte.gz has 5"):
        load_fashion_mnist(tmp_path, "train")
    write_split(tmp_path, "train", images, np.array([0, 1, 2, 3, 12], np.uint8))
    with pytest.raises(DataError, match=r"label 12 outside 0..9"):
        load_fashion_mnist(tmp_path, "train")
    write_split(tmp_path, "train", np.zeros((5, 32, 32), np.uint8), np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: expected uint8 images of shape \(N, 28, 28\)"):
        load_fashion_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split"):
        load_fashion_mnist(tmp_path, "validation")


@pytest.mark.skipif(not HAVE_FMNIST, reason=f"Fashion-MNIST not installed in {DEFAULT_SOURCE}")
def test_real_fashion_mnist():
    for split, n in (("train", 60000), ("t10k", 10000)):
        images, labels = load_fashion_mnist(DEFAULT_SOURCE, split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [n // 10] * len(CLASSES)
    assert labels[0] == CLASSES.index("ankle_boot")  # the first t10k item is an ankle boot
