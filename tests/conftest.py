"""Shared fixtures: tiny chest X-ray datasets built in their real on-disk layouts under tmp_path.

Every builder writes small images (about 40x32 px) in a mix of odd PIL modes
(L, LA, P with and without transparency, RGB, RGBA, 16-bit I;16, a JPEG
saved under a .png name) whose brightness depends on the class, so a model
has something to learn. Each file differs from every other (seeded noise):
byte-identical files would be merged into one split group.

The builders are factory fixtures (`make_radiography(...)` returns the data
root), so a test can build several variants (lower-case folder names, an
empty class...) in its own tmp_path.
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_CHESTXRAY = REPO_ROOT.parent / "shared" / "data" / "covid-chestxray-dataset"

# The odd image modes the builders cycle through. "JPEG" is a JPEG file under a .png name.
MODES = ("L", "LA", "P", "P-transparent", "RGB", "RGBA", "I;16", "JPEG")


@pytest.fixture(scope="session", autouse=True)
def _isolated_default_cache(tmp_path_factory: pytest.TempPathFactory):
    """No test writes to ~/.cache/cxr-tune: point the default cache root at a session temp dir."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_TUNE_CACHE", str(tmp_path_factory.mktemp("default-cache")))
        yield


# ------------------------------------------------------------------ images


def write_xray(path: Path, mode: str = "L", brightness: int = 128, seed: int = 0,
               size: tuple[int, int] = (40, 32)) -> Path:
    """Write a tiny fake X-ray (width, height = size) of mean `brightness` in PIL `mode`.

    `mode` is one of MODES. Transparent pixels (LA, RGBA, P-transparent) sit in
    the top-left corner only, so the mean brightness still tells the class.
    A path ending in .jpg/.jpeg gets a real JPEG whatever the mode (JPEG has no
    alpha or palette: L stays L, others become RGB).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(seed)
    grey = np.clip(brightness + rng.normal(0, 12, (height, width)), 0, 255).astype(np.uint8)
    luminance = Image.fromarray(grey)
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[: height // 4, : width // 4] = 0
    alpha_image = Image.fromarray(alpha)
    rgb = Image.merge("RGB", (luminance, luminance, luminance))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        (luminance if mode == "L" else rgb).save(path, format="JPEG", quality=90)
        return path
    if mode == "L":
        luminance.save(path, format="PNG")
    elif mode == "LA":
        Image.merge("LA", (luminance, alpha_image)).save(path, format="PNG")
    elif mode == "P":
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path, format="PNG")
    elif mode == "P-transparent":
        # 63 colours for the picture, palette entry 63 (white) for the transparent corner
        quantized = rgb.quantize(colors=63)
        indices = np.asarray(quantized).copy()
        indices[: height // 4, : width // 4] = 63
        image = Image.frombytes("P", size, indices.astype(np.uint8).tobytes())
        image.putpalette(quantized.getpalette()[: 63 * 3] + [255, 255, 255])
        image.save(path, format="PNG", transparency=63)
    elif mode == "RGB":
        rgb.save(path, format="PNG")
    elif mode == "RGBA":
        Image.merge("RGBA", (luminance, luminance, luminance, alpha_image)).save(path, format="PNG")
    elif mode == "I;16":
        # A 12-bit X-ray in a 16-bit PNG: brightness b maps to 1000 + 8 b (of 65535).
        deep = (1000 + grey.astype(np.uint16) * 8).astype(np.uint16)
        Image.fromarray(deep).save(path, format="PNG")
    elif mode == "JPEG":
        rgb.save(path, format="JPEG", quality=90)
    else:
        raise ValueError(f"unknown test image mode {mode!r}")
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """The `write_xray(path, mode, brightness, seed, size)` helper."""
    return write_xray


def _write_class_images(folder: Path, count: int, brightness: int, seed: int, suffix: str = ".png",
                        sizes: tuple[tuple[int, int], ...] = ((40, 32),)) -> list[Path]:
    return [
        write_xray(folder / f"img-{i:03d}{suffix}", MODES[(seed + i) % len(MODES)], brightness,
                   seed * 1000 + i, sizes[i % len(sizes)])
        for i in range(count)
    ]


@pytest.fixture
def damaged_tiff() -> bytes:
    """A 48x40 grey TIFF whose StripOffsets tag claims the type FLOAT: Pillow's decoder raises TypeError
    on it (neither OSError nor ValueError)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48), 100, dtype=np.uint8)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\x00"  # Pillow writes little-endian TIFFs
    directory = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, directory)[0]
    for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets: its type LONG (4) becomes FLOAT (11)
            struct.pack_into("<H", data, entry + 2, 11)
    return bytes(data)


# ------------------------------------------------------------------ dataset layouts

RADIOGRAPHY_BRIGHTNESS = {"COVID": 200, "Lung_Opacity": 150, "Normal": 60, "Viral Pneumonia": 110}


@pytest.fixture
def make_radiography(tmp_path: Path) -> Callable[..., Path]:
    """covid-radiography v4+: <Class>/images/*.png and <Class>/masks/*.png (masks are never samples).

    make_radiography(root=None, per_class=5, lower=False, masks=True) -> root
    """

    def build(root: Path | None = None, per_class: int = 5, lower: bool = False, masks: bool = True) -> Path:
        root = root or tmp_path / "covid-radiography"
        for k, (name, brightness) in enumerate(RADIOGRAPHY_BRIGHTNESS.items()):
            folder = root / (name.lower() if lower else name)
            _write_class_images(folder / "images", per_class, brightness, seed=10 + k)
            if masks:
                for i in range(per_class):
                    write_xray(folder / "masks" / f"img-{i:03d}.png", "L", 255, seed=500 + k * 100 + i)
        (root / "README.md.txt").write_text("COVID-19 Radiography Database (test copy)\n")
        return root

    return build


PNEUMONIA_NORMAL_BRIGHTNESS = {"covid": 200, "normal": 60, "pneumonia": 130}


@pytest.fixture
def make_pneumonia_normal(tmp_path: Path) -> Callable[..., Path]:
    """covid-pneumonia-normal: covid/, normal/, pneumonia/ holding images of varied sizes directly.

    make_pneumonia_normal(root=None, per_class=6) -> root. Each class folder also
    holds a non-image file (desktop.ini) that must be ignored.
    """
    sizes = ((40, 32), (32, 40), (64, 48), (36, 36), (50, 30), (33, 47))
    suffixes = (".png", ".jpg", ".jpeg", ".PNG")

    def build(root: Path | None = None, per_class: int = 6) -> Path:
        root = root or tmp_path / "covid-pneumonia-normal"
        for k, (name, brightness) in enumerate(PNEUMONIA_NORMAL_BRIGHTNESS.items()):
            for i in range(per_class):
                seed = 20 + k * 100 + i
                write_xray(root / name / f"{name}-{i:03d}{suffixes[i % len(suffixes)]}",
                           MODES[(k + i) % len(MODES)], brightness, seed, sizes[i % len(sizes)])
            (root / name / "desktop.ini").write_text("[.ShellClassInfo]\n")
        return root

    return build


def sample_xrays(count: int) -> list[Path]:
    """`count` real X-rays from the embedded sample (dataset 3), one per patient, each 0.9 to 1.3 times as wide
    as high (as most are), none a copy of another."""
    from cxrnets.data import SAMPLE_ROOT

    metadata = csv.DictReader((SAMPLE_ROOT / "metadata.csv").open(newline=""))
    chosen: dict[str, Path] = {}
    for row in sorted(metadata, key=lambda row: row["filename"]):
        path = SAMPLE_ROOT / "images" / row["filename"]
        # patient 178's X-rays are patient 97's (one case published twice): a copy
        if row["patientid"] in chosen or row["patientid"] == "178" or row["modality"] != "X-ray":
            continue
        with Image.open(path) as image:
            if 0.9 <= image.width / image.height <= 1.3:
                chosen[row["patientid"]] = path
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError(f"the embedded sample has fewer than {count} X-rays of that shape")


def squashed_299_png(source: Path, target: Path) -> Path:
    """`source` squashed to 299x299 grey PNG, as the Kaggle datasets 1 and 2 hold dataset 3's X-rays."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("L").resize((299, 299), Image.Resampling.BILINEAR).save(target, format="PNG")
    return target


def resized_jpeg(source: Path, target: Path, width: int = 400, quality: int = 75) -> Path:
    """`source` resized to `width` px wide (its aspect ratio kept) and saved as a JPEG of `quality`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        height = round(image.height * width / image.width)
        image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(target, format="JPEG",
                                                                                   quality=quality)
    return target


@pytest.fixture
def make_radiography_copies(tmp_path: Path) -> Callable[..., tuple[Path, list[tuple[str, str]]]]:
    """covid-radiography (dataset 1) as Kaggle assembled it: real X-rays (the embedded sample's) squashed to 299x299
    PNG, `per_class` in each class folder, where the first X-ray is there twice: also as a 400 px wide JPEG of its
    own aspect ratio under another name.

    make_radiography_copies(root=None, per_class=6) -> (root, [(the PNG's relpath, its JPEG copy's relpath), ...])
    """

    def build(root: Path | None = None, per_class: int = 6) -> tuple[Path, list[tuple[str, str]]]:
        root = root or tmp_path / "covid-radiography-copies"
        xrays = iter(sample_xrays(per_class * len(RADIOGRAPHY_BRIGHTNESS)))
        copies = []
        for name in RADIOGRAPHY_BRIGHTNESS:
            for i in range(per_class):
                source = next(xrays)
                squashed_299_png(source, root / name / "images" / f"{name}-{i + 1}.png")
                if i == 0:
                    resized_jpeg(source, root / name / "images" / f"{name}-{per_class + 1}.jpg")
                    copies.append((f"{name}/images/{name}-1.png", f"{name}/images/{name}-{per_class + 1}.jpg"))
        return root, copies

    return build


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """A generic class-per-folder tree: <class>/ with images, some in sub-folders, a masks/
    sub-folder (skipped) and a hidden folder (ignored).

    make_folder(root=None, classes={"healthy": 60, "sick": 190}, per_class=7) -> root
    """

    def build(root: Path | None = None, classes: dict[str, int] | None = None, per_class: int = 7) -> Path:
        root = root or tmp_path / "folder"
        classes = classes or {"healthy": 60, "sick": 190}
        for k, (name, brightness) in enumerate(classes.items()):
            images = _write_class_images(root / name, per_class, brightness, seed=30 + k)
            # every third image one level down: images in sub-folders count too
            (root / name / "batch2").mkdir(exist_ok=True)
            for image in images[::3]:
                image.rename(root / name / "batch2" / image.name)
            write_xray(root / name / "masks" / "mask-000.png", "L", 255, seed=900 + k)
        (root / ".hidden").mkdir(exist_ok=True)
        write_xray(root / ".hidden" / "x.png", "L", 0, seed=999)
        return root

    return build


@pytest.fixture
def make_csv_dataset(tmp_path: Path) -> Callable[..., Path]:
    """A `csv` dataset: labels.csv (path, label, patient) beside img/; 16 patients of 1-2 images,
    two classes, one row whose image is absent and one row with a blank label.

    make_csv_dataset(root=None, columns=("path", "label", "patient")) -> the CSV file.
    Usable rows: 24 (12 'normal', 12 'covid').
    """

    def build(root: Path | None = None, columns: tuple[str, str, str] = ("path", "label", "patient")) -> Path:
        root = root or tmp_path / "csv-data"
        path_column, label_column, patient_column = columns
        rows = []
        for p in range(16):
            label = "covid" if p % 2 else "normal"
            for j in range(2 if p < 8 else 1):
                name = f"img/p{p:02d}-{j}.png"
                write_xray(root / name, MODES[(p + j) % len(MODES)], 190 if label == "covid" else 60,
                           seed=40_000 + p * 10 + j)
                rows.append({path_column: name, label_column: label, patient_column: f"patient-{p:02d}"})
        rows.append({path_column: "img/absent.png", label_column: "covid", patient_column: "patient-99"})
        write_xray(root / "img" / "unlabelled.png", "L", 128, seed=40_999)
        rows.append({path_column: "img/unlabelled.png", label_column: "  ", patient_column: "patient-98"})
        csv_path = root / "labels.csv"
        with csv_path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
        return csv_path

    return build


# covid-chestxray rows: (patientid, finding, view, modality, folder, filename or None = absent, brightness)
# Three-class brightness: COVID-19 bright, other pneumonia mid, No Finding dark.
_C, _P, _N = 200, 130, 60
CHESTXRAY_ROWS = [
    ("1", "COVID-19", "PA", "X-ray", "images", "p1-a.jpg", _C),
    ("1", "COVID-19", "PA", "X-ray", "images", "p1-b.png", _C),
    ("2", "COVID-19, ARDS", "AP", "X-ray", "images", "p2-a.jpeg", _C),
    ("2", "COVID-19, ARDS", "AP", "X-ray", "images", "p2-b.png", _C),
    ("3", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "images", "p3.png", _C),
    ("4", "  covid-19 ", "PA", "X-ray", "images", "p4.png", _C),
    ("5", "COVID-19", "PA", "X-ray", "images", "p5-a.png", _C),
    ("5", "COVID-19", "PA", "X-ray", "images", "p5-b.png", _C),
    ("5", "COVID-19", "L", "X-ray", "images", "p5-lateral.png", _C),        # lateral: view filter
    ("6", "COVID-19", "PA", "X-ray", "images", "p6.png", _C),
    ("6", "COVID-19", "Axial", "CT", "images", "p6-ct.png", _C),            # CT: modality filter
    ("7", "COVID-19", "AP semi erect", "X-ray", "images", "p7.png", _C),
    ("8", "Streptococcus", "PA", "X-ray", "images", "p8-a.png", _P),        # old style: leaf only
    ("8", "Streptococcus", "PA", "X-ray", "images", "p8-b.png", _P),
    ("9", "Pneumonia/Bacterial/Klebsiella", "PA", "X-ray", "images", "p9.png", _P),
    ("10", "Pneumonia/Viral/SARS", "AP", "X-ray", "images", "p10.png", _P),
    ("11", "Pneumonia", "PA", "X-ray", "images", "p11.png", _P),
    ("12", "Pneumonia/Fungal/Pneumocystis", "PA", "X-ray", "images", "p12-a.png", _P),
    ("12", "Pneumonia/Fungal/Pneumocystis", "PA", "X-ray", "images", "p12-b.png", _P),
    ("13", "Pneumonia/Viral/Influenza", "AP", "X-ray", "images", "p13.png", _P),
    ("14", "No Finding", "PA", "X-ray", "images", "p14-a.png", _N),
    ("14", "No Finding", "PA", "X-ray", "images", "p14-b.png", _N),
    ("15", "No Finding", "PA", "X-ray", "images", "p15.png", _N),
    ("16", "no finding", "AP", "X-ray", "images", "p16.png", _N),
    ("17", "No Finding", "PA", "X-ray", "images", "p17.png", _N),
    ("18", "No Finding", "PA", "X-ray", "images", "p18.png", _N),
    ("19", "todo", "PA", "X-ray", "images", "p19.png", _N),                 # unlabelled: skipped
    ("20", "", "PA", "X-ray", "images", "p20.png", _N),                     # blank: skipped
    ("21", "Unknown", "PA", "X-ray", "images", "p21.png", _N),              # unknown: skipped
    ("22", "COVID-19", "PA", "X-ray", "images", None, _C),                  # image absent
    ("23", "No Finding", "AP", "X-ray", "images", None, _N),                # image absent
    ("24", "ARDS", "PA", "X-ray", "images", "p24.png", _P),                 # none of the 3 classes
]
CHESTXRAY_COLUMNS = ["patientid", "offset", "sex", "age", "finding", "survival", "view", "modality", "date",
                     "location", "folder", "filename", "doi", "url", "license", "clinical_notes", "other_notes"]


@pytest.fixture
def make_chestxray(tmp_path: Path) -> Callable[..., Path]:
    """ieee8023 covid-chestxray-dataset: metadata.csv (real column names, quoted notes with commas
    and newlines) beside images/. See CHESTXRAY_ROWS for what each row exercises.

    With the default filters (X-ray, frontal views): 25 usable images of 19 patients
    (multi-label); the 3-class view keeps 24 (COVID-19 10, Other pneumonia 8, No Finding 6).
    """

    def build(root: Path | None = None) -> Path:
        root = root or tmp_path / "covid-chestxray-dataset"
        records = []
        for i, (patient, finding, view, modality, folder, filename, brightness) in enumerate(CHESTXRAY_ROWS):
            name = filename or f"absent-{patient}.jpg"
            if filename:
                write_xray(root / folder / filename, MODES[i % len(MODES)], brightness, seed=50_000 + i)
            records.append({
                "patientid": patient, "offset": str(i % 5) if i % 3 else "", "sex": "MF"[i % 2], "age": str(30 + i),
                "finding": finding, "survival": "", "view": view, "modality": modality,
                "date": "March 3, 2020", "location": "Somewhere, Country", "folder": folder, "filename": name,
                "doi": "10.0000/test", "url": f"https://example.org/case/{i}", "license": "CC BY 4.0",
                "clinical_notes": f'Patient {patient}, "quoted", seen on day {i}.\nSecond line.',
                "other_notes": "",
            })
        (root / "images").mkdir(parents=True, exist_ok=True)
        with (root / "metadata.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=CHESTXRAY_COLUMNS)
            writer.writeheader()
            writer.writerows(records)
        return root

    return build


@pytest.fixture
def real_chestxray() -> Path:
    """The real dataset 3 at ../shared/data/covid-chestxray-dataset (skips where absent)."""
    if not (REAL_CHESTXRAY / "metadata.csv").is_file():
        pytest.skip(f"real covid-chestxray-dataset not found at {REAL_CHESTXRAY} (only on machines with ../shared/data)")
    return REAL_CHESTXRAY
