"""Any image file to the 8-bit RGB that CLIP and the captioners read, scaled rather than clipped.

``Image.convert("RGB")`` alone clips deep images (a 16-bit PNG comes out 99 % white, a float image black)
and drops transparency (whatever colour the transparent pixels hold shows through). Here:

- 16-bit grayscale (``I;16*``) is divided by 257, so 65535 -> 255;
- 32-bit integer (``I``) is read as 16-bit when its values fit in 0..65535 (what 16-bit files become),
  else stretched linearly from its minimum to its maximum;
- 32-bit float (``F``) is multiplied by 255 when its values lie in [0, 1], else stretched likewise;
- images with transparency (an alpha channel, or a palette or colour marked transparent) are laid over
  white, as a web page shows them (alt-text images mostly sit on white pages);
- CMYK with an embedded ICC profile goes through that profile to sRGB, without one (or with a broken one)
  through Pillow's formula (R = (255 - C)(255 - K) / 255);
- every other mode (``1``, ``L``, ``P``, ``LAB``, ``HSV``, ``YCbCr``, ...) through ``convert("RGB")``.

16-bit-per-channel RGB(A) files never reach this code as such: Pillow decodes them to 8 bits per channel
by keeping each sample's high byte, a scaling, not a clipping.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms

WHITE = (255, 255, 255, 255)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class UnsupportedImageMode(ValueError):
    """An image whose pixel mode has no conversion to RGB."""


def to_rgb(image: Image.Image) -> Image.Image:
    try:
        return _convert(image)
    except ValueError as err:
        raise UnsupportedImageMode(f"image mode {image.mode!r} has no conversion to RGB ({err})") from None


def _convert(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_8_bits(np.asarray(image), mode)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")  # La: premultiplied, Pillow's way
        return Image.alpha_composite(Image.new("RGBA", image.size, WHITE), rgba).convert("RGB")
    if mode == "CMYK" and image.info.get("icc_profile"):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
            return ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: Pillow's formula below
    return image.convert("RGB")


def _to_8_bits(values: np.ndarray, mode: str) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
