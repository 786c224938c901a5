"""`cmjax.images.load_image`, the one image decoder: every Pillow mode scaled by its bit depth.

Each test writes a small image with Pillow with known pixel values and checks the decoded floats
against the values computed by hand (no frozen assets). Before this decoder, a 16-bit PNG went
through Pillow's convert('RGB'), which clips mode I;16 at 255: every pixel came out white.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cmjax import images
from cmjax.data.folder import load_image as folder_load_image
from cmjax.errors import DataError

GREY16 = np.array([[0, 1000, 32768], [40000, 65535, 257]], np.uint16)


def _png(im, **kw) -> io.BytesIO:
  buf = io.BytesIO()
  im.save(buf, format=kw.pop("format", "PNG"), **kw)
  buf.seek(0)
  return buf


def test_16bit_grey_png_is_scaled_by_65535(tmp_path):
  path = tmp_path / "g16.png"
  Image.fromarray(GREY16).save(path)          # a 16-bit grey PNG
  with Image.open(path) as im:
    assert im.mode == "I;16"
  x = images.load_image(str(path), 1)
  assert x.dtype == np.float32 and x.shape == (2, 3, 1)
  np.testing.assert_allclose(x[..., 0], GREY16 / 65535.0, rtol=0, atol=1e-7)
  rgb = images.load_image(str(path), 3)
  np.testing.assert_allclose(rgb, np.repeat(GREY16[..., None] / 65535.0, 3, -1), atol=1e-7)


def test_16bit_big_endian_grey():
  im = Image.frombytes("I;16B", (3, 2), GREY16.astype(">u2").tobytes())
  x = images.load_image(_png(im, format="TIFF"), 1)
  np.testing.assert_allclose(x[..., 0], GREY16 / 65535.0, atol=1e-7)


def test_32bit_integer_image_holding_16bit_data_and_out_of_range_refused():
  ok = Image.fromarray(GREY16.astype(np.int32))
  assert ok.mode == "I"
  np.testing.assert_allclose(images.load_image(_png(ok, format="TIFF"), 1)[..., 0],
                             GREY16 / 65535.0, atol=1e-7)
  bad = Image.fromarray(np.array([[0, 70000]], np.int32))
  with pytest.raises(DataError, match="32-bit integer image .* no known full scale"):
    images.load_image(_png(bad, format="TIFF"), 1)


def test_8bit_modes_L_RGB_1bit_cmyk():
  grey = np.array([[0, 51, 255]], np.uint8)
  np.testing.assert_allclose(images.load_image(_png(Image.fromarray(grey)), 1)[..., 0],
                             grey / 255.0, atol=1e-7)
  rgb = np.array([[[255, 0, 0], [0, 128, 255], [10, 20, 30]]], np.uint8)
  x = images.load_image(_png(Image.fromarray(rgb)), 3)
  np.testing.assert_allclose(x, rgb / 255.0, atol=1e-7)
  # RGB -> grey: 0.299 R + 0.587 G + 0.114 B.
  np.testing.assert_allclose(images.load_image(_png(Image.fromarray(rgb)), 1)[..., 0],
                             (rgb / 255.0) @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
  bits = Image.fromarray(np.array([[True, False, True]]))
  assert bits.mode == "1"
  np.testing.assert_array_equal(images.load_image(_png(bits), 1)[..., 0], [[1.0, 0.0, 1.0]])
  cmyk = Image.new("CMYK", (2, 1))
  cmyk.putpixel((0, 0), (0, 0, 0, 0))        # white
  cmyk.putpixel((1, 0), (0, 255, 255, 0))    # red
  np.testing.assert_allclose(images.load_image(_png(cmyk, format="TIFF"), 3)[0],
                             [[1, 1, 1], [1, 0, 0]], atol=1e-7)


def test_palette_with_transparency_and_alpha_dropped():
  pal = Image.new("P", (3, 1))
  pal.putpalette([0, 0, 0, 200, 100, 50, 10, 250, 30] + [0] * (256 * 3 - 9))
  pal.putdata([0, 1, 2])
  pal.info["transparency"] = 1           # the second colour is transparent
  x = images.load_image(_png(pal, transparency=1), 3)
  np.testing.assert_allclose(x[0], np.array([[0, 0, 0], [200, 100, 50], [10, 250, 30]]) / 255.0,
                             atol=1e-7)  # alpha dropped: the stored colour is kept
  rgba = np.array([[[255, 128, 0, 0], [1, 2, 3, 255]]], np.uint8)
  np.testing.assert_allclose(images.load_image(_png(Image.fromarray(rgba)), 3), rgba[..., :3] / 255.0,
                             atol=1e-7)
  la = Image.fromarray(np.array([[[77, 0], [200, 255]]], np.uint8), mode="LA")
  np.testing.assert_allclose(images.load_image(_png(la), 1)[0, :, 0], [77 / 255, 200 / 255], atol=1e-7)


def test_unreadable_file_is_one_line_data_error(tmp_path):
  bad = tmp_path / "x.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
  with pytest.raises(DataError, match=f"cannot read image file {bad}") as e:
    images.load_image(str(bad), 3)
  assert "\n" not in str(e.value)


def test_folder_source_reads_16bit_png_not_white(tmp_path):
  """The folder data set (uint8 RGB) of a 16-bit grey PNG: round(v / 65535 * 255), not 255."""
  g = np.array([[0, 1000, 32768, 65535]] * 4, np.uint16)
  Image.fromarray(g).save(tmp_path / "a.png")
  out = folder_load_image(str(tmp_path / "a.png"), 4)
  expect = np.round(g / 65535.0 * 255.0).astype(np.uint8)
  np.testing.assert_array_equal(out, np.repeat(expect[..., None], 3, -1))
  # 8-bit RGB: bit-identical to the raw pixels.
  rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / "b.png")
  np.testing.assert_array_equal(folder_load_image(str(tmp_path / "b.png"), 4), rgb)


def test_resize_unit_keeps_16bit_precision():
  x = (np.arange(16, dtype=np.float32).reshape(4, 4, 1) * 1000 + 7) / 65535.0
  np.testing.assert_array_equal(images.resize_unit(x, 4, 4), x)  # same size: unchanged
  y = images.resize_unit(x, 2, 2, "nearest")
  assert y.shape == (2, 2, 1) and y.dtype == np.float32
  assert set(np.round(y.ravel() * 65535).astype(int)) <= set(np.round(x.ravel() * 65535).astype(int))


def test_load_image_resized_for_edit_inputs(tmp_path):
  """What `--mode edit` reads for an image file: 16-bit grey -> (H, W, 3) in [0, 1], not white."""
  g = np.full((6, 6), 13107, np.uint16)   # 0.2 of full scale
  Image.fromarray(g).save(tmp_path / "e.png")
  x = images.load_image_resized(str(tmp_path / "e.png"), (3, 3, 3))
  assert x.shape == (3, 3, 3)
  np.testing.assert_allclose(x, 0.2, atol=1e-6)
  with pytest.raises(DataError, match="cannot read image file .*missing.png"):
    images.load_image_resized(str(tmp_path / "missing.png"), (3, 3, 1))
