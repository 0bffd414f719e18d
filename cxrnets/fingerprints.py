"""Perceptual fingerprints of decoded images: the same X-ray re-encoded, resized or squashed is found as near-identical.

Public chest X-ray datasets copy each other: datasets 1 and 2 hold dataset 3's images squashed to 299x299 PNG, and a
dataset may hold one X-ray twice in two sizes, under two names or two patient ids. Byte-identical files are caught
by their sha1; these fingerprints catch the rest.

An image's fingerprint is a difference hash of its pixels decoded at FINGERPRINT_SIZE (cxrnets.cache: resized and
center-cropped to 64 px, whatever the study's image size: cache_fingerprints): the grey image shrunk to 17x17 cells,
one bit per pair of neighbouring cells (right brighter than left, and below brighter than above), 512 bits. A copy
squashed to a square is cropped differently by the cache than its original (which loses its sides), so each image
also gets the fingerprints of central crops of its cached pixels (PROBES), one of which frames the original as the
cache does; two images are near-identical when the plain fingerprint of either is within NEAR_IDENTICAL_BITS of any
of the other's.

Measured on the real covid-chestxray-dataset (ieee8023), at 64 and 224 px, of its 648 X-rays: a copy re-encoded
(JPEG q75), resized (1024 px) or with its gamma changed lies at most 36 bits from its original, a copy squashed to
299x299 PNG at most 47 (aspect ratios 0.8 to 1.45; 3 of 648 beyond, all more oblong). Of the 523 X-rays of its
3-class view, at 64 px: re-encoded at most 21, resized or with gamma 0.8 at most 37, squashed at most 45 (one
beyond, 2.24 times wider than high); at 32 px: re-encoded at most 57 but for one figure (ryct.2020003.fig2-c.png,
64: missed), resized or with gamma 0.8 at most 38, squashed at most 55 (the same one beyond). Of the pairs of images
under two patient ids in its frontal X-rays, at 32, 64 and 224 px: 6 X-rays filed twice lie within 39 bits; then
come the same X-ray filed again with other windowing (2-chest-filmc.jpg, 7-fatal-covid19.jpg: 55 to 58 bits), the
same person's X-rays of two days (AR-1.jpg, AR-2.jpg, extubation-1.jpg: 42 to 58; 64 and 66 at 48 px), and one X-ray
cropped otherwise (pneumonia-7.jpg, streptococcus-...-day1.jpg: 52 at 32 px, 60 at 40, 65 and 68 above); the closest
pair of other people's X-rays (checked by eye) lies 67 bits apart at 32 px, 68 at 64 px, 72 at 224 px; 0.01 % of all
such pairs lie within 78 bits, half within 182. Hence NEAR_IDENTICAL_BITS between the two, nearer the people's
X-rays: a pair joined wrongly costs the split a little balance, a pair missed leaks one X-ray. Not found: a copy
cropped by 3 % on every side (a third of them), or brightened until it clips (3 %).

Every image size is fingerprinted at the one FINGERPRINT_SIZE (cache_fingerprints), so that a dataset splits alike
at every size: two runs or studies of one seed at two sizes hold out the same patients. Fingerprinted at its own
size, as before, the real copy's cropped pair above was joined at 32 and 40 px only, and that one join put 195 of
the 523 images of its 3-class split (seed 0) on another side at 64 px than at 40. FINGERPRINT_SIZE is 64 px for the
copies: datasets 1 and 2 are largely dataset 3 re-encoded and squashed, and at 64 px such a copy lies well within
NEAR_IDENTICAL_BITS (re-encoded within 21 bits, squashed within 45), where at 32 px it lies close to it (57 and 55)
or beyond (one re-encode, 64). What 64 px misses: the real copy's cropped pair (pneumonia-7.jpg,
streptococcus-...-day1.jpg, 65 bits apart; 52 at 32 px) may fall on two sides. Below about 16 px the 17x17 cells
enlarge the image rather than shrink it: neighbouring cells repeat a pixel, most bits are 0 in every image, and
unrelated X-rays fall within NEAR_IDENTICAL_BITS (on the embedded sample at 10 px and 48 bits, 148 patients joined
into 82 groups, one of 117 images); hence a study at a few pixels is fingerprinted at 64 px too, and splits as at 64
and 224 px.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from PIL import Image

from cxrnets.cache import CachedImages, ImageCache, build_cache
from cxrnets.errors import CxrError

log = logging.getLogger(__name__)

CELLS = 17  # the grey image is shrunk to CELLS x CELLS; neighbouring cells give 2 * (CELLS - 1)^2 bits
BITS = 2 * (CELLS - 1) ** 2
# The central crops (width, height, as fractions of the cached image) fingerprinted besides the whole: a copy
# squashed to a square from an original that is wider (narrower) than high is matched by a narrower (lower) crop.
PROBES = ((1.0, 1.0), (0.93, 1.0), (0.86, 1.0), (0.8, 1.0), (0.74, 1.0), (0.69, 1.0), (0.64, 1.0),
          (1.0, 0.93), (1.0, 0.86), (1.0, 0.8), (1.0, 0.74))
NEAR_IDENTICAL_BITS = 60  # of BITS: at most this many bits apart, two images are one X-ray (or one person's)
# What splits joined within before NEAR_IDENTICAL_BITS was set from the pairs above: a cxrnets.train run split then
# continues on its split (as one split from own_size_fingerprints does).
EARLIER_NEAR_IDENTICAL_BITS = 48
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)
CHUNK = 256  # images fingerprinted, or compared with all others, at once
FINGERPRINT_SIZE = 64  # px: images of every size are fingerprinted from the same files decoded at this size
# px: before FINGERPRINT_SIZE, images were fingerprinted at their own size, at this size where smaller
# (own_size_fingerprints); the fewest pixels fingerprinted.
EARLIER_LEAST_FINGERPRINT_SIZE = 32


def cache_fingerprints(cache: ImageCache, rows: np.ndarray | None = None) -> np.ndarray:
    """The fingerprints of `cache.images[rows]` (every image if None), from the same files decoded at
    FINGERPRINT_SIZE: `cache` itself at that size, else a cache of that size beside it (decoded once, as any
    cache)."""
    size = cache.images.shape[-1]
    if size != FINGERPRINT_SIZE:
        log.info("%s at %d px: fingerprinting its images at %d px, as at every size (so that it splits alike at "
                 "every size)", cache.index.name, size, FINGERPRINT_SIZE)
    return fingerprints(decoded_at(cache, FINGERPRINT_SIZE).images, rows)


def own_size_fingerprints(cache: ImageCache) -> np.ndarray:
    """The fingerprints splits were made from before every size was fingerprinted at FINGERPRINT_SIZE: from
    `cache`'s own images, or from the same files decoded at EARLIER_LEAST_FINGERPRINT_SIZE where they are smaller,
    for a cxrnets.train run split then, which continues on its split."""
    return fingerprints(decoded_at(cache, own_size_fingerprint_size(cache.images.shape[-1])).images)


def own_size_fingerprint_size(image_size: int) -> int:
    """The size images of `image_size` px were fingerprinted at before FINGERPRINT_SIZE (own_size_fingerprints)."""
    return max(image_size, EARLIER_LEAST_FINGERPRINT_SIZE)


def decoded_at(cache: ImageCache, size: int) -> ImageCache:
    """`cache` itself where its images are `size` px, else the images of `cache` read from the cache of the same
    files at `size` beside it: the cache of every file `cache` was built from, undecodable ones included, which is
    the one `python -m cxrnets.cache` stages (decoded once, as any cache); CxrError if one of the images of `cache`
    does not decode at `size`."""
    if cache.images.shape[-1] == size:
        return cache
    decoded = build_cache(cache.listed, size, cache.directory.parent)
    position = {relpath: row for row, relpath in enumerate(decoded.index.frame["relpath"])}
    lost = [relpath for relpath in cache.index.frame["relpath"] if relpath not in position]
    if lost:
        raise CxrError(f"{decoded.directory}: {len(lost)} image(s) of {cache.index.name} that decode at "
                       f"{cache.images.shape[-1]} px do not at {size} px, to be fingerprinted (e.g. {lost[0]}; the "
                       f"errors are listed in {decoded.directory / 'index.parquet'}); replace or remove those files")
    rows = np.array([position[relpath] for relpath in cache.index.frame["relpath"]], dtype=np.int64)
    images = replace(decoded.images, rows=decoded.images.rows[rows])
    return ImageCache(decoded.directory, cache.index, images, decoded.sha1[rows], decoded.decoded, decoded.listed)


def fingerprints(images: CachedImages, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, len(PROBES), BITS // 8) uint8, packed bits: the fingerprints of `images[rows]` (every image if None),
    images of EARLIER_LEAST_FINGERPRINT_SIZE px or more (cache_fingerprints fingerprints a cache at FINGERPRINT_SIZE
    whatever its size)."""
    if images.shape[-1] < EARLIER_LEAST_FINGERPRINT_SIZE:
        raise ValueError(f"images of {images.shape[-1]} px are too small to fingerprint (under "
                         f"{EARLIER_LEAST_FINGERPRINT_SIZE} px)")
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    result = np.zeros((len(rows), len(PROBES), BITS // 8), dtype=np.uint8)
    for start in range(0, len(rows), CHUNK):
        pixels = images[rows[start:start + CHUNK]]
        grey = np.tensordot(LUMINANCE, pixels.astype(np.float32), axes=([0], [1]))  # (n, S, S)
        for k, one in enumerate(grey):
            result[start + k] = [_difference_hash(one, width, height) for width, height in PROBES]
    return result


def _difference_hash(grey: np.ndarray, width: float, height: float) -> np.ndarray:
    size = grey.shape[0]
    box = (size * (1 - width) / 2, size * (1 - height) / 2, size * (1 + width) / 2, size * (1 + height) / 2)
    cells = np.asarray(Image.fromarray(grey, mode="F").resize((CELLS, CELLS), Image.Resampling.BOX, box=box))
    across = cells[:-1, 1:] > cells[:-1, :-1]
    down = cells[1:, :-1] > cells[:-1, :-1]
    return np.packbits(np.concatenate([across.ravel(), down.ravel()]))


def _signs(packed: np.ndarray) -> np.ndarray:
    """Packed bits as +1/-1 float32: the bits two such rows differ in are (BITS - their dot product) / 2."""
    return np.unpackbits(packed, axis=-1).astype(np.float32) * 2 - 1


def _close(first: np.ndarray, second: np.ndarray, within: int = NEAR_IDENTICAL_BITS) -> dict[tuple[int, int], int]:
    """{(i, j): bits} for the pairs whose plain fingerprint `first[i, 0]` is `within` bits of one of `second[j]`'s,
    the least bits over PROBES."""
    found: dict[tuple[int, int], int] = {}
    for probe in range(len(PROBES)):
        probed = _signs(second[:, probe])
        for start in range(0, len(first), CHUNK):
            plain = _signs(first[start:start + CHUNK, 0])
            bits = np.rint((BITS - plain @ probed.T) / 2).astype(np.int32)
            for i, j in zip(*np.nonzero(bits <= within)):
                key = (int(i) + start, int(j))
                found[key] = min(found.get(key, BITS), int(bits[i, j]))
    return found


def near_identical_pairs(prints: np.ndarray, within: int = NEAR_IDENTICAL_BITS) -> list[tuple[int, int, int]]:
    """(i, j, bits) for each pair of images among `prints`, i < j, that are near-identical (`within` bits), in
    order."""
    pairs: dict[tuple[int, int], int] = {}
    for (i, j), bits in _close(prints, prints, within).items():
        if i != j:
            key = (min(i, j), max(i, j))
            pairs[key] = min(pairs.get(key, BITS), bits)
    return sorted((i, j, bits) for (i, j), bits in pairs.items())


def near_identical_to(prints: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each image of `prints`, the image of `others` it is nearest-identical to, or -1 for none."""
    nearest = np.full(len(prints), -1)
    least = np.full(len(prints), BITS + 1)
    for close in (_close(prints, others), {(i, j): bits for (j, i), bits in _close(others, prints).items()}):
        for (i, j), bits in close.items():
            if bits < least[i]:
                nearest[i], least[i] = j, bits
    return nearest
