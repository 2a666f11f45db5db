"""Edges of the pretraining input pipeline (``droppos.pretrain.datapath``) that the end-to-end tests pass
through without pinning: the sample's flip against torchvision's own draw, the decompression-bomb limit at
its boundary, the JPEG markers, a window whose right edge sits on the iMCU grid, and a missing decoder."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from droppos.pretrain.datapath import (decode_rgb, decode_window, ends_jpeg, refuse_bomb, sample_crop,
                                       window_decoder, window_source)
from droppos.utils.rng import sample_seed
from test_datapath import encoded, needs_window_decoder


def test_a_samples_window_and_flip_are_torchvisions_draws_from_its_seed():
    """The reference: torchvision's RandomResizedCrop then RandomHorizontalFlip, applied to an image, from the
    generator seeded as the sample's seed rule says; the flip is read off the image it returns."""
    img = torch.arange(6 * 9, dtype=torch.float32).view(1, 6, 9)
    flips = []
    for k in range(40):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(3, 1, k))
            window = T.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3])
            flipped = torch.equal(T.RandomHorizontalFlip(0.5)(img), img.flip(-1))
        assert sample_crop(6, 9, 3, 1, k) == (*window, flipped), k
        flips.append(flipped)
    assert 0 < sum(flips) < len(flips)


def test_the_bomb_limit_is_twice_pillows_and_refuses_only_above_it(monkeypatch):
    """Pillow raises DecompressionBombError above twice MAX_IMAGE_PIXELS (a warning between once and twice)."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    refuse_bomb(10, 15)   # 150: between once and twice the limit, Pillow decodes it (with a warning)
    refuse_bomb(10, 20)   # 200: exactly twice, still decoded
    with pytest.raises(ValueError, match="201 pixels|1 x 201"):
        refuse_bomb(1, 201)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # limit switched off: nothing refused
    refuse_bomb(10**5, 10**5)


def test_jpeg_markers_are_matched_exactly():
    assert ends_jpeg(b"\xff\xd8....\xff\xd9") and ends_jpeg(b"\xff\xd8....\xff\xd9\x00\x00")
    assert not ends_jpeg(b"\xff\xd8....\xff\xda") and not ends_jpeg(b"\xff\xd8....\xff\xd9\x01")


def test_data_that_is_not_a_jpeg_is_left_to_pillow():
    """A stream that starts above the JPEG start marker (FF E0 ...) is no JPEG: the window path says None, and a
    whole decode is Pillow's (which cannot identify it), not libjpeg's."""
    from PIL import UnidentifiedImageError

    needs_window_decoder()
    junk = b"\xff\xe0" + bytes(range(200))
    assert window_source(junk) is None
    with pytest.raises(UnidentifiedImageError):
        decode_rgb(junk)


@pytest.mark.parametrize("kind", ["420", "422"])
def test_a_window_ending_on_the_imcu_grid_keeps_its_right_neighbours_chroma(kind):
    """Fancy upsampling of the last column of a window that ends on a 16-pixel iMCU boundary reads the chroma
    of the next iMCU: the decoder must be given columns beyond the window's right edge."""
    needs_window_decoder()
    data = encoded(kind)
    full = decode_rgb(data)
    h, w = window_source(data)
    for right in range(16, w, 16):
        for width in (1, 2, 3):
            got = decode_window(data, 3, right - width, 5, width, w)
            assert np.array_equal(got, full[3:8, right - width:right]), (kind, right, width)


def test_without_the_compiled_decoder_the_window_path_is_off(monkeypatch):
    """``window_decoder()`` is None when the extension cannot be imported (not built), never an ImportError."""
    import droppos.pretrain

    monkeypatch.setitem(sys.modules, "droppos.pretrain._jpeg_window", None)  # import raises ImportError
    monkeypatch.delattr(droppos.pretrain, "_jpeg_window", raising=False)  # (an earlier import left it there)
    window_decoder.cache_clear()
    try:
        assert window_decoder() is None
        assert window_source(encoded("420")) is None
    finally:
        window_decoder.cache_clear()
