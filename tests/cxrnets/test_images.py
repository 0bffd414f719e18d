"""Tests for cxrnets.images: every PIL mode to a (3, S, S) uint8 array, and bad files."""

from __future__ import annotations

import errno
import io
import logging
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrnets import images
from cxrnets.errors import CxrError
from cxrnets.images import decode, load_image, to_rgb

# The mode PIL reports when it opens each file the fixtures write.
OPENED_MODE = {"L": "L", "LA": "LA", "P": "P", "P-transparent": "P", "RGB": "RGB", "RGBA": "RGBA",
               "I;16": "I;16", "JPEG": "RGB"}


@pytest.mark.parametrize("mode", sorted(OPENED_MODE))
@pytest.mark.parametrize("size", [16, 32, 64])
def test_every_mode_gives_square_uint8_rgb(mode: str, size: int, tmp_path: Path, write_image) -> None:
    path = write_image(tmp_path / "x.png", mode, brightness=128, seed=1, size=(40, 32))
    with Image.open(path) as opened:  # the fixture really wrote the odd mode
        assert opened.mode == OPENED_MODE[mode]
        assert opened.format == ("JPEG" if mode == "JPEG" else "PNG")
    array = load_image(path, size)
    assert array.shape == (3, size, size)
    assert array.dtype == np.uint8
    assert array.flags.writeable and array.flags.c_contiguous
    # greyscale stays greyscale in all three channels (JPEG may round a little)
    assert np.abs(array[0].astype(int) - array[2].astype(int)).max() <= 2
    assert array.max() > 0


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "JPEG"])
def test_brightness_survives_decoding(mode: str, tmp_path: Path, write_image) -> None:
    dark = load_image(write_image(tmp_path / "dark.png", mode, brightness=50, seed=1), 32)
    bright = load_image(write_image(tmp_path / "bright.png", mode, brightness=200, seed=2), 32)
    assert abs(dark.mean() - 50) < 8
    assert abs(bright.mean() - 200) < 8


def test_16_bit_keeps_its_contrast() -> None:
    # A 12-bit X-ray in a 16-bit PNG: values 1000..1800. A naive 8-bit conversion would clip
    # everything to white (or, divided by 256, to almost black).
    ramp = np.linspace(1000, 1800, 32 * 32).reshape(32, 32).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16"
    array = decode(buffer.getvalue(), 32, "ramp.png")
    assert array.min() == 0 and array.max() == 255  # stretched over the full range
    assert len(np.unique(array)) > 200  # and not posterised
    assert np.all(np.diff(array[0].astype(int).ravel()) >= 0)  # the ramp keeps its order


def png(pixels: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG of uint16 `pixels` ((H, W) or (H, W, samples)), written by hand: Pillow writes 16 bits
    per sample for greyscale only."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter byte 0: none

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def tiff(pixels: np.ndarray, photometric: int = 1) -> bytes:
    """An uncompressed little-endian TIFF of `pixels` ((H, W) or (H, W, samples): uint8, uint16 or float32),
    written by hand: Pillow writes neither 16-bit RGB nor WhiteIsZero (photometric 0)."""
    height, width = pixels.shape[:2]
    samples = pixels.shape[2] if pixels.ndim == 3 else 1
    strip = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    tags = {256: (4, [width]), 257: (4, [height]), 258: (3, [pixels.dtype.itemsize * 8] * samples),
            259: (3, [1]), 262: (3, [photometric]), 273: (4, [8]), 277: (3, [samples]), 278: (4, [height]),
            279: (4, [len(strip)])}
    if pixels.dtype.kind == "f":
        tags[339] = (3, [3])  # SampleFormat: IEEE float
    directory = 8 + len(strip) + len(strip) % 2
    extra_at = directory + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, (kind, values) in sorted(tags.items()):
        packed = struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        if len(packed) > 4:  # stored after the directory, which holds its offset
            packed, extra = struct.pack("<I", extra_at + len(extra)), extra + packed
        entries += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\x00")
    return (b"II*\x00" + struct.pack("<I", directory) + strip + b"\x00" * (len(strip) % 2)
            + struct.pack("<H", len(tags)) + entries + b"\x00" * 4 + extra)


TWELVE_BIT_RAMP = np.tile(np.linspace(0, 4095, 64), (64, 1)).astype(np.uint16)  # an X-ray in 12 of 16 bits


def test_a_16_bit_grey_image_written_by_hand_is_read_like_pillows() -> None:
    by_hand = decode(png(TWELVE_BIT_RAMP, colour_type=0), 32, "hand.png")
    buffer = io.BytesIO()
    Image.fromarray(TWELVE_BIT_RAMP).save(buffer, format="PNG")
    np.testing.assert_array_equal(by_hand, decode(buffer.getvalue(), 32))
    np.testing.assert_array_equal(decode(tiff(TWELVE_BIT_RAMP), 32, "hand.tif"), by_hand)
    assert by_hand.max() >= 250


def test_a_hot_pixel_or_a_burned_in_marker_does_not_darken_a_16_bit_x_ray() -> None:
    """16-bit grey was stretched from its minimum to its maximum: one pixel at 65535 (a dead detector element, a
    burned-in marker) left a 12-bit X-ray near black (mean 6.9 of 255)."""
    plain = decode(png(TWELVE_BIT_RAMP, colour_type=0), 64)
    for marker in (np.s_[0, 0], np.s_[:2, :4]):  # one pixel; eight (0.2% of the image)
        marked = TWELVE_BIT_RAMP.copy()
        marked[marker] = 65535
        decoded = decode(png(marked, colour_type=0), 64)
        assert abs(decoded.mean() - plain.mean()) < 2 and decoded.mean() > 120
        assert decoded[0, 0, 0] == 255  # the marker itself is clipped to white


def test_a_16_bit_image_of_almost_one_value_keeps_what_else_it_shows() -> None:
    """Where the window's percentiles coincide, the image's minimum and maximum window it instead."""
    almost_flat = np.full((64, 64), 1000, dtype=np.uint16)
    almost_flat[:4, :4] = 3000  # 0.4% of the image
    decoded = decode(png(almost_flat, colour_type=0), 64)
    assert decoded[0, :4, :4].min() == 255 and decoded[0, 8:, 8:].max() == 0


@pytest.mark.parametrize("kind", ["RGB PNG", "grey+alpha PNG", "RGBA PNG", "RGB TIFF"])
def test_16_bit_colour_or_alpha_is_refused_saying_how_to_convert(kind: str) -> None:
    """Pillow keeps the high byte of each sample of these: a 12-bit X-ray came out nearly black."""
    opaque = np.full_like(TWELVE_BIT_RAMP, 65535)
    data = {"RGB PNG": lambda: png(np.dstack([TWELVE_BIT_RAMP] * 3), colour_type=2),
            "grey+alpha PNG": lambda: png(np.dstack([TWELVE_BIT_RAMP, opaque]), colour_type=4),
            "RGBA PNG": lambda: png(np.dstack([TWELVE_BIT_RAMP] * 3 + [opaque]), colour_type=6),
            "RGB TIFF": lambda: tiff(np.dstack([TWELVE_BIT_RAMP] * 3), photometric=2)}[kind]()
    with pytest.raises(CxrError, match=rf"x-ray.img: a 16-bit {re.escape(kind)}, whose samples Pillow reads as "
                                       r"their high byte only .* convert it to 16-bit greyscale, e\.g\. magick "):
        decode(data, 32, "x-ray.img")


def test_nan_and_infinite_pixels_are_black_and_the_rest_keeps_its_contrast() -> None:
    ramp = np.linspace(-1.0, 3.0, 64 * 64).reshape(64, 64).astype(np.float32)
    ramp[0, 0], ramp[63, 63], ramp[32, :] = np.nan, np.inf, -np.inf
    array = decode(tiff(ramp), 64, "float.tif")
    assert array[0, 0, 0] == array[0, 32].max() == 0
    assert array[0, 63, 62] == 255 and array[0, 0, 1] == 0  # the finite maximum and minimum
    assert len(np.unique(array)) > 200


def test_a_float_image_without_a_finite_pixel_is_refused() -> None:
    with pytest.raises(CxrError, match=r"nan.tif: cannot decode image \(every pixel is NaN or infinite\)"):
        decode(tiff(np.full((8, 8), np.nan, dtype=np.float32)), 8, "nan.tif")


@pytest.mark.parametrize("pixels", [
    (TWELVE_BIT_RAMP // 16).astype(np.uint8),  # Pillow inverts 8-bit WhiteIsZero itself
    TWELVE_BIT_RAMP,
    TWELVE_BIT_RAMP.astype(np.float32),
], ids=["8-bit", "16-bit", "float"])
def test_white_is_zero_tiffs_are_inverted_at_every_depth(pixels: np.ndarray) -> None:
    """PhotometricInterpretation WhiteIsZero: the same numbers show the negative picture."""
    black_is_zero = decode(tiff(pixels, photometric=1), 64)  # at its own size: no resizing to round
    white_is_zero = decode(tiff(pixels, photometric=0), 64)
    assert black_is_zero[0, 16, 0] < 10 and black_is_zero[0, 16, -1] > 245  # dark to bright, left to right
    np.testing.assert_array_equal(white_is_zero, 255 - black_is_zero)


def test_flat_16_bit_image_is_black_not_an_error() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 777, dtype=np.uint16)).save(buffer, format="PNG")
    assert decode(buffer.getvalue(), 8).max() == 0


def float64_windowed(pixels: np.ndarray, white_is_zero: bool = False) -> np.ndarray:
    """The 16-bit windowing as it was done in float64 copies of the image (up to 25 bytes a pixel)."""
    values = pixels.astype(np.float64)
    low, high = np.percentile(values, images.WINDOW_PERCENTILES)
    if high <= low:
        low, high = values.min(), values.max()
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = ((np.clip(values, low, high) - low) * scale).round()
    return (255.0 - grey if white_is_zero else grey).astype(np.uint8)


def twelve_bit_x_ray(width: int, height: int) -> np.ndarray:
    """A real X-ray of the embedded sample as a detector gives it: 12 bits over an offset, with noise, a
    burned-in marker and a hot pixel."""
    from cxrnets.data import SAMPLE_ROOT

    with Image.open(SAMPLE_ROOT / "images" / "000001-2.jpg") as xray:
        grey = np.asarray(xray.convert("L").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)
    noise = np.random.default_rng(3).normal(0, 6, grey.shape)
    pixels = np.clip(280 + grey * 14 + noise, 0, 4095).astype(np.uint16)
    pixels[10:40, 10:90] = 4095  # a burned-in letter
    pixels[height // 2, width // 3] = 65535  # a dead detector element
    return pixels


@pytest.mark.parametrize("white_is_zero", [False, True])
def test_16_bit_windowing_is_what_float64_gave(white_is_zero: bool) -> None:
    xray = twelve_bit_x_ray(1100, 900)
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(xray), white_is_zero))[..., 0],
                                  float64_windowed(xray, white_is_zero))
    rng = np.random.default_rng(4)
    for count in (1, 2, 3, 7, 199, 1000, 12_345):  # the percentiles fall on and between pixels
        pixels = rng.integers(0, 65536, size=(1, count), dtype=np.uint16)
        np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(pixels)))[..., 0], float64_windowed(pixels))


def test_a_16_bit_x_ray_decodes_in_a_few_bytes_a_pixel() -> None:
    """A 4000x4000 16-bit X-ray took 401 MB of arrays (25 bytes a pixel) to window in float64; the cache decodes
    as many at once as the machine has cores."""
    data = tiff(np.tile(twelve_bit_x_ray(1000, 1000), (4, 4)))  # uncompressed: quick to write
    tracemalloc.start()
    try:
        decoded = decode(data, 64, "big.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.shape == (3, 64, 64) and decoded.max() > 200
    assert peak < 6 * 4000 * 4000, f"{peak / 1e6:.0f} MB"


def test_a_16_bit_image_over_the_pixel_limit_is_refused_without_decoding_it() -> None:
    """A 700 KB 16-bit PNG of 19000x19000 zeros passed the 400-million-pixel limit and took ~10 GB to decode; an
    X-ray has at most ~30 million pixels."""
    width, height = 8001, 8000  # just over 8000x8000
    compressor = zlib.compressobj(1)
    row = b"\x00" * (1 + 2 * width)  # filter byte, then zeros
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    tracemalloc.start()
    try:
        with pytest.raises(CxrError, match=r"^zeros.png: image is 8001x8000 pixels, over the 64,000,000-pixel limit; "
                                           r"downsize it before use$"):
            decode(data, 224, "zeros.png")
        assert tracemalloc.get_traced_memory()[1] < 10_000_000
    finally:
        tracemalloc.stop()


def test_an_image_over_twice_the_limit_is_refused_with_its_own_size_not_pillows_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12000x12000 PNG was refused as 'over the 64,000,000-pixel limit (Image size (144000000 pixels) exceeds
    limit of 128000000 pixels, ...)': two limits. Its header alone is enough: it is never decoded."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # decode sets it: restored after

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(CxrError) as error:
        decode(data, 224, "big.png")
    assert str(error.value) == ("big.png: image is 12000x12000 pixels, over the 64,000,000-pixel limit; downsize it "
                                "before use")
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS  # lifted only to read the header


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P-transparent"])
def test_transparency_is_composited_onto_black(mode: str, tmp_path: Path, write_image) -> None:
    # a 32x32 image whose top-left 8x8 corner is fully transparent (white underneath for P)
    array = load_image(write_image(tmp_path / "t.png", mode, brightness=180, seed=3, size=(32, 32)), 32)
    assert array[:, :8, :8].max() == 0
    assert array[:, 8:, 8:].mean() > 150


def test_rgba_half_transparent_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 128
    result = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert np.all(np.abs(result.astype(int) - 128) <= 1)


def test_greyscale_with_trns_colour_is_transparent() -> None:
    grey = np.full((8, 8), 200, dtype=np.uint8)
    grey[4:, :] = 100
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG", transparency=200)  # tRNS: grey 200 is transparent
    array = decode(buffer.getvalue(), 8)
    assert array[:, :4].max() == 0
    assert np.all(array[:, 4:] == 100)


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(1, 1), (3, 800), (800, 31)])
def test_an_image_too_small_to_be_an_x_ray_is_kept_with_a_warning_naming_it(size: tuple[int, int],
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cxrnets.images"):
        array = decode(png_of(Image.new("L", size, 120)), 32, "sliver.png")
    assert array.shape == (3, 32, 32)
    assert caplog.text.count(f"sliver.png: the image is {size[0]}x{size[1]} pixels, under 32 on its shorter side: "
                             "too small to be an X-ray, kept; check the file") == 1


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_an_image_its_alpha_hides_nearly_all_of_is_kept_with_a_warning_naming_it(
        mode: str, caplog: pytest.LogCaptureFixture) -> None:
    pixels = np.full((100, 100, 4 if mode == "RGBA" else 2), 200, dtype=np.uint8)
    pixels[..., -1] = 0
    pixels[0, 0, -1] = 255  # one pixel of 10,000 shows
    with caplog.at_level(logging.WARNING, logger="cxrnets.images"):
        array = decode(png_of(Image.fromarray(pixels, mode=mode)), 32, "hidden.png")
    assert array.shape == (3, 32, 32) and array.max() <= 200
    assert caplog.text.count("hidden.png: its transparency hides 100.0% of the image, which comes out nearly all "
                             "black") == 1


def test_an_ordinary_image_or_one_partly_transparent_is_not_warned_of(caplog: pytest.LogCaptureFixture,
                                                                      tmp_path: Path, write_image) -> None:
    half = np.full((64, 64, 4), 200, dtype=np.uint8)
    half[:, :32, 3] = 0
    with caplog.at_level(logging.WARNING, logger="cxrnets.images"):
        decode(png_of(Image.fromarray(half, mode="RGBA")), 32, "half.png")
        load_image(write_image(tmp_path / "x.jpg", "JPEG", 128, seed=1, size=(400, 300)), 16)  # drafted under 32
    assert caplog.text == ""


def test_other_modes_convert(tmp_path: Path) -> None:
    for mode in ("1", "CMYK", "I", "F"):
        image = Image.new(mode, (20, 20))
        assert to_rgb(image).mode == "RGB"
    bilevel = Image.fromarray(np.eye(8, dtype=bool))
    assert bilevel.mode == "1"
    assert np.asarray(to_rgb(bilevel)).max() == 255


def test_resize_center_crops_the_middle() -> None:
    # a wide image: left and right thirds black, middle white -> the crop is mostly white
    wide = np.zeros((30, 90), dtype=np.uint8)
    wide[:, 30:60] = 255
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    array = decode(buffer.getvalue(), 30)
    assert array.shape == (3, 30, 30)
    assert array.mean() > 240


def test_large_jpeg_decodes_at_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((800, 1000), 90, dtype=np.uint8)).save(path, quality=90)
    array = load_image(path, 32)
    assert array.shape == (3, 32, 32)
    assert abs(array.mean() - 90) < 3


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(CxrError, match="garbage.png: cannot decode image") as error:
        load_image(path, 32)
    assert "not a format Pillow reads" in str(error.value) and "BytesIO" not in str(error.value)


def test_a_damaged_tiff_names_the_file(damaged_tiff: bytes, tmp_path: Path) -> None:
    path = tmp_path / "damaged.tif"
    path.write_bytes(damaged_tiff)
    with pytest.raises(CxrError, match=r"damaged.tif: cannot decode image \(.+\); replace or delete the file"):
        load_image(path, 32)


@pytest.mark.parametrize("mode, suffix", [("L", ".png"), ("RGBA", ".png"), ("L", ".jpg")])
def test_truncated_file_names_the_file(mode: str, suffix: str, tmp_path: Path, write_image) -> None:
    whole = write_image(tmp_path / f"whole{suffix}", mode, brightness=120, seed=4, size=(64, 64)).read_bytes()
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CxrError, match=f"truncated{suffix}.*cannot decode"):
        load_image(path, 32)


def test_empty_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(CxrError, match=r"empty.png: empty file \(0 bytes\)"):
        load_image(path, 32)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "absent.png"
    with pytest.raises(CxrError, match="absent.png.*exists"):
        load_image(path, 32)


def test_damaged_bytes_never_escape_as_other_errors(tmp_path: Path, write_image) -> None:
    """Flipped and cut bytes give a decoded array or a CxrError, never another exception."""
    rng = np.random.default_rng(0)
    for mode in ("L", "P-transparent", "I;16", "JPEG"):
        data = write_image(tmp_path / f"{mode}.png", mode, 128, seed=5, size=(48, 40)).read_bytes()
        for trial in range(40):
            damaged = bytearray(data)
            if trial % 2:
                damaged = damaged[: rng.integers(1, len(damaged))]
            else:
                for position in rng.integers(0, len(damaged), size=4):
                    damaged[position] = rng.integers(0, 256)
            try:
                array = decode(bytes(damaged), 16, "damaged.png")
            except CxrError as error:
                assert "damaged.png" in str(error)
            else:
                assert array.shape == (3, 16, 16)


def raising(error: BaseException):
    def raise_it(*args, **kwargs):
        raise error
    return raise_it


@pytest.mark.parametrize("error", [MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory")],
                         ids=["MemoryError", "ENOMEM"])
def test_running_out_of_memory_is_not_called_a_bad_image(error: BaseException, tmp_path: Path, write_image,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory while Pillow decodes says nothing about the file: it is raised as it is, not as a CxrError
    that would have the file replaced or deleted (and the cache leave it out for good)."""
    path = write_image(tmp_path / "fine.png", "L", 128, seed=7, size=(40, 32))
    monkeypatch.setattr(images.ImageOps, "exif_transpose", raising(error))
    with pytest.raises(type(error)) as raised:
        load_image(path, 16)
    assert raised.value is error


def test_an_error_without_a_message_is_named_by_its_type(tmp_path: Path, write_image,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "odd.png", "L", 128, seed=7, size=(40, 32))
    monkeypatch.setattr(images.ImageOps, "exif_transpose", raising(ValueError()))
    with pytest.raises(CxrError, match=r"odd.png: cannot decode image \(ValueError\); replace or delete the file"):
        load_image(path, 16)


@pytest.mark.parametrize("limit", [40 * 32 - 1, 40 * 32 // 2 - 1], ids=["just over", "over twice"])
def test_huge_image_is_refused(limit: int, tmp_path: Path, write_image, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "huge.png", "L", 128, seed=6, size=(40, 32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # decode sets it: restored after
    monkeypatch.setattr(images, "MAX_PIXELS", limit)
    with pytest.raises(CxrError, match=rf"^{re.escape(str(path))}: image is 40x32 pixels, over the {limit:,}-pixel "
                                       r"limit; downsize it before use$"):
        load_image(path, 16)
    monkeypatch.setattr(images, "MAX_PIXELS", 40 * 32)
    assert load_image(path, 16).shape == (3, 16, 16)


def test_the_pixel_limit_is_max_pixels_not_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow refuses images over its own limit (89.5 million pixels, twice that without a warning) before
    cxrnets.images' check sees them: MAX_PIXELS is the limit that applies."""
    path = tmp_path / "big.png"
    Image.new("L", (120, 100), 90).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if Pillow's default were below MAX_PIXELS
    assert load_image(path, 16).shape == (3, 16, 16)
    assert load_image(path, 16).max() == 90
