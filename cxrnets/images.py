"""Decode one chest X-ray file into a square uint8 RGB array, whatever its mode.

Preprocessing follows the paper: resize the shorter side to the image size,
then center-crop a square. Flips and normalisation happen later, on tensors
(see `cxrnets.batches`), so that the decoded pixels can be cached once.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrnets.errors import CxrError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# Other image types decode does not read, which an image viewer or converter saves as PNG or JPEG. Files of a type in
# none of these sets (.csv, .txt, .json, ...) are taken for files that are not images.
UNREAD_IMAGE_SUFFIXES = frozenset({
    ".jfif", ".jpe", ".jp2", ".j2k", ".jpf", ".jpx", ".jxl", ".heic", ".heif", ".avif", ".svg", ".ico", ".tga",
    ".psd", ".pbm", ".pgm", ".ppm", ".pnm", ".exr", ".hdr", ".raw", ".dng", ".nii", ".nrrd", ".mha", ".mhd",
})

# Images above this many pixels are refused before they are decompressed: a chest X-ray has at most ~30 million
# (5000x6000), and a small file of zeros can declare a huge image (a 700 KB 16-bit PNG, 19000x19000 pixels, took
# ~10 GB to decode). decode makes it Pillow's limit too (Image.MAX_IMAGE_PIXELS, for the whole process).
MAX_PIXELS = 8_000 * 8_000
# Threads decode at once, and Pillow's limit is a global: it is set under this lock, so that declared_size can lift
# it for the moment it reads a header
PILLOW_LIMIT = threading.Lock()

# The modes in which Pillow holds greyscale of more than 8 bits: to_rgb windows them into 8.
HIGH_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# The percentiles of its pixels between which to_rgb windows such an image: one hot pixel or a burned-in marker at
# 65535 would leave a 12-bit X-ray near black if its extremes were the window.
WINDOW_PERCENTILES = (0.5, 99.5)
# 16-bit pixels are histogrammed and looked up this many at a time: numpy widens them to 8-byte indices to do so.
CHUNK_PIXELS = 1 << 20

PNG_COLOUR_TYPES = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}  # those that may hold 16 bits per sample
ALPHA_MODES = ("LA", "RGBA", "La", "RGBa")  # the modes whose alpha to_rgb composites onto black

# Images decode says are likely not X-rays (kept all the same): a shorter side under LEAST_SIDE pixels, or at
# least MOSTLY_HIDDEN of the pixels at an alpha under HIDING_ALPHA (composited onto black, the image is black).
LEAST_SIDE = 32
HIDING_ALPHA = 16
MOSTLY_HIDDEN = 0.99


WINDOWS_FOLDER_FILES = frozenset({"thumbs.db", "desktop.ini"})  # what Windows Explorer writes beside pictures


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is one that holds no data: hidden (macOS's ._* AppleDouble files among
    them), the __MACOSX folder of a zip made on a Mac, or Windows Explorer's Thumbs.db and desktop.ini."""
    return name.startswith(".") or name == "__MACOSX" or name.lower() in WINDOWS_FOLDER_FILES


def data_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The files under `directory`, recursively, sorted, and the links there that lead nowhere. Links to folders
    are followed, each folder read once however many links lead to it (a link loop ends); hidden files and
    folders (is_hidden) are not searched."""
    files, broken_links = [], []
    seen = {os.path.realpath(directory)}
    for folder, subfolders, names in os.walk(directory, followlinks=True):
        unseen = []
        for name in sorted(subfolders):
            real = os.path.realpath(os.path.join(folder, name))
            if not is_hidden(name) and real not in seen:
                seen.add(real)
                unseen.append(name)
        subfolders[:] = unseen
        for name in names:
            path = Path(folder, name)
            if is_hidden(name):
                continue
            if path.is_file():
                files.append(path)
            elif not path.exists():  # a link to nothing
                broken_links.append(path)
    return sorted(files), sorted(broken_links)


def is_image_file(path: Path) -> bool:
    """Whether `path`'s suffix is that of an image type decode reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def types_not_read(paths: Iterable[Path]) -> Counter[str]:
    """How many of `paths` there are of each type (suffix, lower-cased) that is not an image type decode reads."""
    return Counter(path.suffix.lower() or "(no extension)" for path in paths if not is_image_file(path))


def images_and_others(types: Counter[str]) -> tuple[Counter[str], Counter[str]]:
    """types_not_read's counts split into those of images (DICOM, .jfif, .heic, ...: how_to_read says what to do)
    and those of files that are not images (.csv, .txt, ...)."""
    images = Counter({suffix: count for suffix, count in types.items()
                      if suffix in DICOM_SUFFIXES | UNREAD_IMAGE_SUFFIXES})
    return images, types - images


def described_types(types: Counter[str]) -> str:
    """`.dcm 2, .jfif 1`: types_not_read's counts."""
    return ", ".join(f"{suffix} {count}" for suffix, count in sorted(types.items()))


def how_to_read(types: Iterable[str]) -> str:
    """What to do with images of `types` (images_and_others' first) for decode to read them."""
    types = set(types)
    if not types & DICOM_SUFFIXES:
        return "convert them to PNG or JPEG"
    return "convert DICOM to PNG" + (" (and the others to PNG or JPEG)" if types - DICOM_SUFFIXES else "")


def to_rgb(image: Image.Image, white_is_zero: bool = False) -> Image.Image:
    """Convert any PIL mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F) to 8-bit RGB.

    Transparent pixels are composited onto black, the background of an X-ray.
    High-bit-depth greyscale (16-bit PNG, 32-bit int or float) is windowed
    to 0..255 between its own WINDOW_PERCENTILES, clipping the pixels outside
    (between its min and max where those percentiles coincide), since many
    16-bit X-rays use 10-12 bits, then inverted if `white_is_zero` (a TIFF's
    PhotometricInterpretation 0, which Pillow inverts itself in 8-bit images
    only); its NaN and infinite pixels become black (ValueError if it has no
    other pixel).
    """
    if has_transparent_colour(image):  # a palette entry or a tRNS colour: make it an alpha channel
        image = image.convert("RGBA")
    elif image.mode == "P":
        image = image.convert("RGB")
    if image.mode in HIGH_BIT_GREY_MODES:
        pixels = np.asarray(image)
        grey = windowed_16_bit(pixels, white_is_zero) if pixels.dtype.kind == "u" and pixels.itemsize == 2 \
            else windowed_wide(pixels, white_is_zero)
        image = Image.fromarray(grey, mode="L")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def has_transparent_colour(image: Image.Image) -> bool:
    """Whether a palette entry or a colour (PNG's tRNS) of `image` marks its transparent pixels."""
    return image.mode in ("P", "1", "L", "RGB") and image.info.get("transparency") is not None


def window(values: np.ndarray, low: float, high: float, white_is_zero: bool) -> np.ndarray:
    """`values` (float64, overwritten) clipped to low..high and stretched to 0..255, rounded; inverted if
    `white_is_zero`."""
    scale = 255.0 / (high - low) if high > low else 0.0
    np.clip(values, low, high, out=values)
    values -= low
    values *= scale
    np.round(values, out=values)
    if white_is_zero:
        np.subtract(255.0, values, out=values)
    return values


def windowed_16_bit(pixels: np.ndarray, white_is_zero: bool) -> np.ndarray:
    """to_rgb's window of 16-bit `pixels`, as uint8, in a byte a pixel beyond `pixels`: the percentiles come from
    a histogram of the 65,536 levels and the window is a table of them, looked up."""
    flat = pixels.reshape(-1)
    counts = np.zeros(1 << 16, dtype=np.int64)
    for start in range(0, flat.size, CHUNK_PIXELS):
        counts += np.bincount(flat[start:start + CHUNK_PIXELS], minlength=1 << 16)
    cumulative = np.cumsum(counts)
    low, high = (percentile_of_levels(cumulative, q) for q in WINDOW_PERCENTILES)
    if high <= low:  # nearly every pixel is one value
        present = np.flatnonzero(counts)
        low, high = float(present[0]), float(present[-1])
    table = window(np.arange(1 << 16, dtype=np.float64), low, high, white_is_zero).astype(np.uint8)
    grey = np.empty(flat.size, dtype=np.uint8)
    for start in range(0, flat.size, CHUNK_PIXELS):
        grey[start:start + CHUNK_PIXELS] = table[flat[start:start + CHUNK_PIXELS]]
    return grey.reshape(pixels.shape)


def percentile_of_levels(cumulative: np.ndarray, q: float) -> float:
    """np.percentile(pixels, q), its default (linear) method to the last bit, of the pixels whose count at or
    below each level 0, 1, 2, ... is `cumulative`."""
    count = int(cumulative[-1])
    position = (count - 1) * (q / 100)
    below = float(np.floor(position))
    weight = position - below

    def level(rank: float) -> float:  # the rank-th pixel, counted from 0, in sorted order
        return float(np.searchsorted(cumulative, min(rank, count - 1), side="right"))

    a, b = level(below), level(below + 1)
    return b - (b - a) * (1 - weight) if weight >= 0.5 else a + (b - a) * weight  # as numpy interpolates


def windowed_wide(pixels: np.ndarray, white_is_zero: bool) -> np.ndarray:
    """to_rgb's window of 32-bit integer or float `pixels`, as uint8, in float64 (its NaN and infinite pixels
    black; ValueError if it has no other pixel)."""
    values = pixels.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError("every pixel is NaN or infinite")
    finite_values = values[finite]
    low, high = np.percentile(finite_values, WINDOW_PERCENTILES, overwrite_input=True)
    if high <= low:  # nearly every pixel is one value
        low, high = finite_values.min(), finite_values.max()
    del finite_values
    values[~finite] = low
    window(values, low, high, white_is_zero)
    values[~finite] = 0.0
    return values.astype(np.uint8)


def high_byte_only(image: Image.Image, data: bytes) -> str | None:
    """What the file `data` (opened as `image`) is if it holds 16 bits per sample in colour or with alpha,
    which Pillow reads into an 8-bit mode by keeping each sample's high byte; None for any other file."""
    if image.format == "PNG" and data[12:16] == b"IHDR" and data[24] == 16 and data[25] in PNG_COLOUR_TYPES:
        return f"a 16-bit {PNG_COLOUR_TYPES[data[25]]} PNG"  # IHDR's bit depth and colour type bytes
    if image.format == "TIFF" and image.mode not in HIGH_BIT_GREY_MODES:
        bits = max(np.atleast_1d(image.tag_v2.get(258, 8)))  # BitsPerSample
        if bits > 8:
            return f"a {bits}-bit {image.mode} TIFF"
    return None


def hidden_share(image: Image.Image) -> float:
    """The share of `image`'s pixels that its alpha (or its transparent palette entry or colour) hides: under
    HIDING_ALPHA, nearly black once to_rgb composites them onto black. 0 for an image without transparency."""
    if image.mode not in ALPHA_MODES and not has_transparent_colour(image):
        return 0.0
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return float((alpha < HIDING_ALPHA).mean())


def warn_if_degenerate(image: Image.Image, width: int, height: int, name: str | Path) -> None:
    """Warn, naming the file `name`, of an image (`width` x `height` as stored) too small to hold an X-ray, or
    whose alpha hides nearly all of it (hidden_share)."""
    if min(width, height) < LEAST_SIDE:
        log.warning("%s: the image is %dx%d pixels, under %d on its shorter side: too small to be an X-ray, kept; "
                    "check the file", name, width, height, LEAST_SIDE)
    hidden = hidden_share(image)
    if hidden >= MOSTLY_HIDDEN:
        log.warning("%s: its transparency hides %.1f%% of the image, which comes out nearly all black (transparent "
                    "pixels are composited onto black), kept; check the file", name, 100 * hidden)


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bilinear, antialiased), then center-crop size x size."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` says the process ran out of memory (MemoryError, or an OSError of ENOMEM): it says nothing
    about the image, which another try may decode."""
    return isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno == errno.ENOMEM)


def declared_size(data: bytes) -> tuple[int, int]:
    """The width and height that the header of image `data` declares, read with Pillow's pixel limit lifted
    (nothing is decoded)."""
    with PILLOW_LIMIT:
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        finally:
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def too_many_pixels(name: str | Path, width: int, height: int) -> CxrError:
    """The error for an image of width x height pixels, over MAX_PIXELS."""
    return CxrError(f"{name}: image is {width}x{height} pixels, over the {MAX_PIXELS:,}-pixel limit; downsize it "
                    "before use")


def decode(data: bytes, size: int, name: str | Path = "<bytes>") -> np.ndarray:
    """Decode image bytes into a (3, size, size) uint8 array; CxrError names `name` where the image cannot be
    decoded. Running out of memory (out_of_memory) is raised as it is."""
    if not data:
        raise CxrError(f"{name}: empty file (0 bytes), no image; replace or delete the file")
    try:
        with warnings.catch_warnings():
            # Image.open checks Pillow's own limit (a warning over it, an error over twice it): make that
            # MAX_PIXELS, and let the check below say so
            with PILLOW_LIMIT:
                Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # as stored: a JPEG's draft below decodes it smaller
            if width * height > MAX_PIXELS:
                raise too_many_pixels(name, width, height)
            truncated = high_byte_only(image, data)
            if truncated:
                raise CxrError(
                    f"{name}: {truncated}, whose samples Pillow reads as their high byte only (an X-ray that "
                    "uses 10-12 of the 16 bits comes out nearly black); convert it to 16-bit greyscale, e.g. "
                    "magick IN -background black -alpha remove -colorspace Gray -depth 16 OUT.png (ImageMagick), "
                    "or to 8 bits per sample"
                )
            white_is_zero = image.format == "TIFF" and image.tag_v2.get(262) == 0  # PhotometricInterpretation
            if image.format == "JPEG":
                # Let libjpeg decode at a reduced scale: large JPEGs decode many times faster.
                image.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(image)
            image.load()
    except CxrError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own check, at twice MAX_PIXELS
        width, height = declared_size(data)
        if width * height > MAX_PIXELS:
            raise too_many_pixels(name, width, height) from error
        raise CxrError(f"{name}: a frame or tile of the image is over the {MAX_PIXELS:,}-pixel limit, though the "
                       f"image is {width}x{height} pixels: a damaged header? replace or delete the file") from error
    except UnidentifiedImageError as error:  # its message names an in-memory buffer, not the file
        raise CxrError(f"{name}: cannot decode image (not a format Pillow reads, or its header is damaged; "
                       f"{len(data):,} bytes); replace or delete the file") from error
    except Exception as error:  # Pillow's decoders raise OSError, ValueError, TypeError, ... on damaged bytes
        if out_of_memory(error):
            raise
        raise CxrError(f"{name}: cannot decode image ({str(error) or type(error).__name__}); replace or delete the "
                       "file") from error
    warn_if_degenerate(image, width, height, name)
    try:
        rgb = to_rgb(image, white_is_zero)
    except ValueError as error:  # a float image without a finite pixel
        raise CxrError(f"{name}: cannot decode image ({error}); replace or delete the file") from error
    return np.asarray(resize_center_crop(rgb, size)).transpose(2, 0, 1).copy()


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read and decode one image file into a (3, size, size) uint8 array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CxrError(f"{path}: cannot read image ({error.strerror}); check that the file exists") from error
    return decode(data, size, path)
