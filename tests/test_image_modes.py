"""Every image mode reaches the models as 8-bit RGB scaled, not clipped (issue #12): each file is written
in its real format, loaded through the dataset, and compared with a conversion computed here with numpy
(or LittleCMS for LAB)."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from egg_zoo_discritune.data_loaders import images
from egg_zoo_discritune.data_loaders.image_modes import UnsupportedImageMode, to_rgb
from egg_zoo_discritune.data_loaders.images import ImageRecord, ImageRecordsDataset

RNG = np.random.default_rng(0)


def _loaded(path) -> np.ndarray:
    dataset = ImageRecordsDataset([ImageRecord(path, path.stem)], lambda image: torch.from_numpy(np.array(image)))
    item = dataset[0]
    assert item is not None and dataset.n_skipped == 0
    return item[0].numpy()


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return rgb * a + 255 * (1 - a)


def _png16(path, samples: np.ndarray) -> None:
    """A 16-bit-per-channel PNG (colour type 2 or 6), which Pillow cannot write, from the PNG spec."""
    height, width, channels = samples.shape
    rows = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_16_bit_grayscale_png_is_scaled_not_whitened(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    pixels = _loaded(tmp_path / "gray16.png")
    expected = np.rint(values / 257)
    assert np.abs(pixels - expected[..., None]).max() == 0
    assert abs(pixels.mean() - 127.5) < 1  # convert("RGB") alone gave a mean of 254 here


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_rgb_and_rgba_png(tmp_path, channels):
    samples = RNG.integers(0, 65536, (16, 16, channels), dtype=np.uint16)
    _png16(tmp_path / "rgb16.png", samples)
    high_byte = (samples >> 8).astype(np.float64)
    expected = high_byte if channels == 3 else _over_white(high_byte[..., :3], high_byte[..., 3])
    assert np.abs(_loaded(tmp_path / "rgb16.png") - expected).max() <= 1


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-3.0, 5.0)])
def test_32_bit_float_tiff(tmp_path, low, high):
    values = RNG.uniform(low, high, (16, 16)).astype(np.float32)
    values[0, 0], values[0, 1] = low, high
    Image.fromarray(values).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    expected = values * 255 if (low, high) == (0.0, 1.0) else (values - low) * 255 / (high - low)
    assert np.abs(_loaded(tmp_path / "float.tif") - np.rint(expected)[..., None]).max() <= 1


@pytest.mark.parametrize("high", [65535, 1_000_000])
def test_32_bit_integer_tiff(tmp_path, high):
    values = RNG.integers(0, high + 1, (16, 16)).astype(np.int32)
    values[0, 0], values[0, 1] = 0, high
    Image.fromarray(values).save(tmp_path / "int.tif")
    assert Image.open(tmp_path / "int.tif").mode == "I"
    expected = values / 257 if high == 65535 else values * 255 / high
    assert np.abs(_loaded(tmp_path / "int.tif") - np.rint(expected)[..., None]).max() <= 1


def test_palette_with_a_transparent_colour_is_laid_over_white(tmp_path):
    indices = RNG.integers(0, 4, (16, 16)).astype(np.uint8)
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    image.save(tmp_path / "palette.png", transparency=0)  # index 0, black, is transparent
    assert "transparency" in Image.open(tmp_path / "palette.png").info
    colours = np.array(palette).reshape(4, 3)[indices].astype(np.float64)
    expected = np.where((indices == 0)[..., None], 255.0, colours)
    assert np.abs(_loaded(tmp_path / "palette.png") - expected).max() == 0


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_channel_is_laid_over_white(tmp_path, mode):
    channels = 4 if mode == "RGBA" else 2
    values = RNG.integers(0, 256, (16, 16, channels), dtype=np.uint8)
    Image.fromarray(values, mode=mode).save(tmp_path / "alpha.png")
    colour = values[..., :3] if mode == "RGBA" else np.repeat(values[..., :1], 3, axis=2)
    expected = _over_white(colour.astype(np.float64), values[..., -1])
    assert np.abs(_loaded(tmp_path / "alpha.png") - expected).max() <= 1


def test_cmyk_tiff(tmp_path):
    values = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(values, mode="CMYK").save(tmp_path / "cmyk.tif")
    c = values.astype(np.float64)
    expected = (255 - c[..., :3]) * (255 - c[..., 3:]) / 255
    assert np.abs(_loaded(tmp_path / "cmyk.tif") - expected).max() <= 1


def test_lab_tiff_matches_littlecms(tmp_path):
    values = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(values, mode="LAB")
    image.save(tmp_path / "lab.tif")
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    expected = np.asarray(ImageCms.applyTransform(image, transform)).astype(np.float64)
    assert np.abs(_loaded(tmp_path / "lab.tif") - expected).max() <= 1


def test_premultiplied_alpha_converts():
    image = Image.new("La", (4, 4), (100, 128))
    assert np.asarray(to_rgb(image)).shape == (4, 4, 3)


def test_a_mode_without_conversion_is_skipped_and_counted_with_its_reason(tmp_path, monkeypatch):
    # Every mode Pillow decodes converts; a conversion that fails (a future mode) is what this stands for.
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    Image.new("RGB", (7, 7)).save(tmp_path / "odd.png")
    real = images.to_rgb

    def refuse_odd(image):
        if image.size == (7, 7):
            raise UnsupportedImageMode("image mode 'P;4' has no conversion to RGB")
        return real(image)

    monkeypatch.setattr(images, "to_rgb", refuse_odd)
    dataset = ImageRecordsDataset([ImageRecord(tmp_path / n, n) for n in ("ok.png", "odd.png")], np.asarray)
    assert dataset[0] is not None and dataset[1] is None
    assert dataset.n_undecodable == 1 and dataset.n_unsupported_mode == 1
