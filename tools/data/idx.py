"""Read the IDX format (the format of MNIST and Fashion-MNIST) and load Fashion-MNIST.

An IDX file is, big-endian throughout::

    bytes 0-1   0x00 0x00                   magic prefix
    byte  2     dtype code                  0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                            0x0D float32, 0x0E float64
    byte  3     ndim                        number of dimensions (>= 1)
    4 * ndim    dimensions                  uint32 each
    rest        data                        prod(dims) * itemsize bytes, row-major

Files may be gzip-compressed (recognised by their content, not their name). Every check
failure raises :class:`DataError` (a ``ValueError``) whose one-line message names the file,
what is wrong and how to fix it.

Usage::

    images = read_idx("train-images-idx3-ubyte.gz")          # (60000, 28, 28) uint8
    images, labels = load_fashion_mnist(DEFAULT_SOURCE, "train")
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from droppos.errors import UserError

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")

#: Fashion-MNIST class names in label order, safe as folder names.
CLASSES: tuple[str, ...] = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)

#: The same classes as the dataset's authors write them.
CLASS_TITLES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: split name -> file prefix of the IDX files (``<prefix>-images-idx3-ubyte[.gz]``).
SPLITS = {"train": "train", "t10k": "t10k", "test": "t10k"}

_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` or pass `--source DIR`"


class DataError(UserError):
    """Bad or missing input data; the message is one line naming the file and the fix."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {INSTALL_HINT}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({e}); re-download or reinstall the file"
            ) from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array of native byte order.

    Args:
        data: the whole file content.
        name: how to call the input in error messages.
    Returns:
        array of shape ``dims`` with the dtype given by the file's dtype code.
    """
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes, the header alone is 4+)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{name}: not an IDX file (magic number {data[:4].hex()} should start with 0000); "
            "pass the -idx?-ubyte file itself"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(
            f"{name}: unknown IDX dtype code 0x{code:02x} (known: "
            + ", ".join(f"0x{c:02x}" for c in _DTYPES)
            + ")"
        )
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{name}: truncated IDX file ({len(data)} bytes, header {dims} needs {expected}); "
            "re-download or reinstall the file"
        )
    if len(data) > expected:
        raise DataError(
            f"{name}: IDX file has {len(data) - expected} trailing bytes after the data of shape {dims}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gzip-compressed or raw; see the module docstring for the checks.

    Returns:
        array of shape ``dims`` (e.g. ``(N, 28, 28)`` uint8 for images, ``(N,)`` for labels).
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``compress`` or the name ends in .gz).

    The dtype must be one of the IDX dtypes (uint8, int8, int16, int32, float32, float64).
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
    if array.dtype not in codes or array.ndim == 0:
        raise ValueError(f"cannot write dtype {array.dtype} with {array.ndim} dims as IDX")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz" if compress is None else compress:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def _find(source: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (source / name).is_file():
            return source / name
    raise DataError(f"{source / (stem + '.gz')}: Fashion-MNIST file not found; {INSTALL_HINT}")


def load_fashion_mnist(
    source_dir: str | os.PathLike = DEFAULT_SOURCE, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST from its four IDX files.

    Args:
        source_dir: folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
        split: ``"train"`` (60000 items) or ``"t10k"`` (10000 items; ``"test"`` is an alias).
    Returns:
        images ``(N, 28, 28)`` uint8 (0 = background) and labels ``(N,)`` int64 in ``0..9``
        (names in :data:`CLASSES`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; choose one of {sorted(SPLITS)}")
    source = Path(source_dir)
    if not source.is_dir():
        raise DataError(f"{source}: Fashion-MNIST folder not found; {INSTALL_HINT}")
    prefix = SPLITS[split]
    img_path = _find(source, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find(source, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(
            f"{lbl_path}: {len(labels)} labels but {img_path.name} has {len(images)} images; "
            "the two files come from different releases"
        )
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataError(f"{lbl_path}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}")
    return images, labels.astype(np.int64)
