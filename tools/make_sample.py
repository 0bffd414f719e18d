"""Build the embedded sample: a small, real, redistributable subset of dataset 3.

The sample lives in ``cxrnets/sample/`` (package data) and serves the
end-to-end tests on any fresh clone. It was made, from the repository root,
with exactly::

    python tools/make_sample.py --source ../shared/data/covid-chestxray-dataset --out cxrnets/sample --max-images 300 --max-side 256 --seed 0

(every flag above is also the default). The script is deterministic: the same
source and flags give the same rows and the same files.

Rules, in order:

1. Keep rows with ``modality == X-ray``, a frontal ``view`` (PA, AP,
   AP Supine, AP semi erect, ...; lateral ``L``, blank and ``?`` are dropped),
   ``folder == images`` and an image file that exists and opens.
2. Drop rows whose license does not allow redistributing a modified
   (downsized) copy: blank or unrecognised licenses, and every NoDerivatives
   (``-ND``) license. Kept rows keep their ``license``, ``url`` and ``doi``
   as attribution.
3. Drop rows whose ``finding`` is ``todo``, ``unknown`` or blank, and rows
   whose image an earlier row already lists (upstream repeats a few cases
   under a second patient id).
4. Take every patient that has at least one non-COVID-19 row (other
   pneumonias, No Finding, ...: they are rare), all of that patient's eligible
   rows; then fill up to ``--max-images`` with whole COVID-19-only patients,
   visited in an order shuffled with ``--seed``. A patient is never split.
5. Downsize each image so its longer side is at most ``--max-side`` px
   (never upscaled) with LANCZOS, keeping its file name and its real format
   (JPEG re-encoded at quality 90, PNG saved as PNG in its original mode).
   Images already small enough are copied byte for byte.
6. Write ``metadata.csv`` (same columns, same order, same quoting as the
   source; only the kept rows), ``images/`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import shutil
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = "../shared/data/covid-chestxray-dataset"
DEFAULT_OUT = "cxrnets/sample"

FRONTAL_VIEWS = {"pa", "ap", "ap supine", "ap semi erect", "ap semi-erect", "ap erect"}
UNLABELLED_FINDINGS = {"", "todo", "unknown"}
# Licenses that allow redistributing a modified copy (NoDerivatives excluded below).
ALLOWED_LICENSE = re.compile(r"^(cc by(-nc)?(-sa)?( \d\.\d)?|cc0( \d\.\d)?|apache 2\.0|mit)$", re.I)
OUTPUT_NAMES = {"images", "metadata.csv", "README.md"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Build cxrnets/sample: a small redistributable subset of the "
            "covid-chestxray-dataset (dataset 3). Relative paths are taken "
            "from the repository root."
        )
    )
    p.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="dataset 3 folder holding metadata.csv, README.md and images/ (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="output folder; its images/, metadata.csv and README.md are replaced (default: %(default)s)",
    )
    p.add_argument(
        "--max-images",
        type=int,
        default=300,
        help="upper bound on the number of images kept (default: %(default)s)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=256,
        help="longest image side in pixels after downsizing; never upscaled (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the shuffle that picks the COVID-19 patients (default: %(default)s)",
    )
    return p.parse_args(argv)


def resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def finding_group(finding: str) -> str:
    """3-class group of a finding string (for selection and the summary only)."""
    parts = {x.strip().lower() for x in re.split(r"[,/]", finding) if x.strip()}
    if "covid-19" in parts:
        return "COVID-19"
    if parts == {"no finding"}:
        return "No Finding"
    return "other"


def license_ok(lic: str) -> bool:
    lic = " ".join(lic.split())
    if not lic or re.search(r"(^|-)nd\b", lic, re.I):
        return False
    return bool(ALLOWED_LICENSE.match(lic))


def load_rows(source: Path) -> tuple[list[str], list[list[str]]]:
    text = (source / "metadata.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, data = rows[0], rows[1:]
    # The writer must reproduce the source byte for byte, so the sample keeps
    # the exact same column set, order and quoting.
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\n").writerows(rows)
    if buf.getvalue() != text:
        sys.exit(f"error: {source / 'metadata.csv'} does not round-trip through the csv module; "
                 "check its quoting and line endings")
    return header, data


def select(header: list[str], data: list[list[str]], source: Path, max_images: int, seed: int):
    col = {name: i for i, name in enumerate(header) if name}
    dropped: Counter[str] = Counter()
    odd: list[str] = []
    eligible: list[list[str]] = []
    seen_files: dict[str, str] = {}
    for row in data:
        get = lambda name: row[col[name]].strip()  # noqa: E731
        if get("modality") != "X-ray":
            dropped["not X-ray"] += 1
            continue
        if get("view").lower() not in FRONTAL_VIEWS:
            dropped[f"view {get('view')!r}"] += 1
            continue
        if get("folder") != "images":
            dropped[f"folder {get('folder')!r}"] += 1
            continue
        path = source / "images" / get("filename")
        if not path.is_file():
            dropped["image file absent"] += 1
            odd.append(f"absent: {get('filename')}")
            continue
        if not license_ok(get("license")):
            dropped[f"license {get('license')!r}"] += 1
            continue
        if get("finding").lower() in UNLABELLED_FINDINGS:
            dropped[f"finding {get('finding')!r}"] += 1
            continue
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # a broken file is reported and skipped
            dropped["image unreadable"] += 1
            odd.append(f"unreadable: {get('filename')}: {exc}")
            continue
        if get("filename") in seen_files:
            # Upstream lists some images twice under two patient ids (e.g.
            # 339 repeats 285): one image, one row, else a patient split leaks.
            dropped["image already listed by an earlier row"] += 1
            odd.append(f"duplicate: {get('filename')} (patient {get('patientid')}) repeats "
                       f"patient {seen_files[get('filename')]}")
            continue
        seen_files[get("filename")] = get("patientid")
        eligible.append(row)

    by_patient: dict[str, list[list[str]]] = defaultdict(list)
    for row in eligible:
        by_patient[row[col["patientid"]].strip()].append(row)

    def has_non_covid(rows: list[list[str]]) -> bool:
        return any(finding_group(r[col["finding"]]) != "COVID-19" for r in rows)

    must = sorted(p for p, rows in by_patient.items() if has_non_covid(rows))
    covid_only = sorted(p for p in by_patient if p not in set(must))
    chosen = list(must)
    total = sum(len(by_patient[p]) for p in must)
    if total > max_images:
        sys.exit(f"error: the non-COVID-19 patients alone hold {total} images, over --max-images {max_images}")
    random.Random(seed).shuffle(covid_only)
    for p in covid_only:
        if total == max_images:
            break
        if total + len(by_patient[p]) <= max_images:
            chosen.append(p)
            total += len(by_patient[p])
    keep = set(chosen)
    kept = [row for row in eligible if row[col["patientid"]].strip() in keep]  # source order
    return kept, dropped, odd, len(eligible)


def downsize(src: Path, dst: Path, max_side: int) -> str:
    """Write ``src`` to ``dst`` with longer side <= max_side; return a note."""
    with Image.open(src) as im:
        fmt, mode, size = im.format, im.mode, im.size
        scale = max_side / max(size)
        if scale >= 1:
            shutil.copyfile(src, dst)
            return f"{fmt} {mode} copied"
        new = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        extra = {}
        if "icc_profile" in im.info:
            extra["icc_profile"] = im.info["icc_profile"]
        if mode == "P":
            # Pillow resizes P images with NEAREST; go through RGB(A) so that
            # LANCZOS applies, then back to an adaptive palette.
            work = im.convert("RGBA" if "transparency" in im.info else "RGB")
            out = work.resize(new, Image.Resampling.LANCZOS)
            out = out.quantize(colors=256, method=Image.Quantize.FASTOCTREE if out.mode == "RGBA"
                               else Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        else:
            out = im.resize(new, Image.Resampling.LANCZOS)
        if fmt == "JPEG":
            out.save(dst, format="JPEG", quality=90, optimize=True, **extra)
        elif fmt == "PNG":
            out.save(dst, format="PNG", optimize=True, **extra)
        else:
            sys.exit(f"error: {src} is {fmt}, only JPEG and PNG are handled")
        with Image.open(dst) as check:
            assert check.format == fmt and check.mode == mode and max(check.size) <= max_side, dst
        return f"{fmt} {mode} resized"


def source_provenance(source: Path) -> tuple[str, str]:
    text = (source / "README.md").read_text(encoding="utf-8")
    date = re.search(r"\b(20\d\d-\d\d-\d\d)\b", text)
    commit = re.search(r"\b([0-9a-f]{40})\b", text)
    if not date or not commit:
        sys.exit(f"error: {source / 'README.md'} does not name the snapshot date and commit")
    return date.group(1), commit.group(1)


def table(counter: Counter, head: str) -> str:
    lines = [f"| {head} | images |", "|---|---:|"]
    for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {key or '(blank)'} | {n} |")
    return "\n".join(lines)


def write_readme(out: Path, args, date: str, commit: str, header, kept, size_bytes: int,
                 n_eligible: int, png_as_jpg: int, dup_pairs: list[str]) -> None:
    col = {name: i for i, name in enumerate(header) if name}
    findings = Counter(r[col["finding"]] for r in kept)
    groups = Counter(finding_group(r[col["finding"]]) for r in kept)
    groups = Counter({("other (not COVID-19, not No Finding)" if k == "other" else k): v
                      for k, v in groups.items()})
    dups = ("upstream lists some images a second time under another patient id: "
            + ", ".join(dup_pairs)) if dup_pairs else "none here"
    fill = ("All eligible rows fit under --max-images, so every eligible patient is in."
            if len(kept) == n_eligible else
            f"{len(kept)} of the {n_eligible} eligible images were kept.")
    licenses = Counter(r[col["license"]] for r in kept)
    views = Counter(r[col["view"]] for r in kept)
    patients = len({r[col["patientid"]].strip() for r in kept})
    cmd = (f"python tools/make_sample.py --source {args.source} --out {args.out} "
           f"--max-images {args.max_images} --max-side {args.max_side} --seed {args.seed}")
    text = f"""# Embedded sample of dataset 3 (covid-chestxray-dataset)

A small, real subset of the public "COVID-19 image data collection"
(Joseph Paul Cohen, Paul Morrison, Lan Dao et al.,
https://github.com/ieee8023/covid-chestxray-dataset), taken from the snapshot
of {date} (commit {commit}
of a public fork) that this project uses as dataset 3. It ships inside the
package so that the end-to-end tests run on any fresh clone. It is far too small to train a useful classifier.

## How it was made

From the repository root:

```
{cmd}
```

`tools/make_sample.py` keeps X-ray rows with a frontal view (PA, AP,
AP Supine) whose image exists, whose license allows redistributing a
modified copy (blank/unknown and NoDerivatives licenses are dropped) and
whose finding is labelled (not `todo`), dropping rows that repeat an image
an earlier row already lists ({dups}); it takes every patient with a
non-COVID-19 image (other pneumonias, No Finding) whole, then fills up with
whole COVID-19 patients picked by a seeded shuffle. Each image is downsized
so that its longer side is at most {args.max_side} px (LANCZOS, never
upscaled), keeping its file name and its format (JPEG re-encoded at quality
90; PNG kept lossless in its original mode; images already small enough are
copied unchanged). `metadata.csv` has the same columns, order and quoting as
the upstream file, restricted to the kept rows (`folder` is `images`).
{fill}

As upstream, {png_as_jpg} files named `*.jpg` hold PNG data; they are kept
that way, so open images by content (Pillow does), not by file extension.

## Contents

{len(kept)} images from {patients} patients, {size_bytes / 1e6:.2f} MB in all
(metadata.csv, images/ and this file).

{table(groups, "3-class group")}

{table(findings, "finding")}

{table(views, "view")}

{table(licenses, "license")}

## Licenses and attribution

The project's own license does not cover these files. Each image keeps its
own license, given in the `license` column of `metadata.csv` together with
its source (`url`) and, where known, its publication (`doi`); reuse must
follow that license and credit that source. Images under NonCommercial or
ShareAlike licenses keep those terms (the downsized copies are shared under
the same license as their originals).

## Intended use

The upstream authors ask that no claim of diagnostic performance be made
from models trained on this collection without a clinical study. This sample
is test data for the software only.
"""
    blocks = [b if b.startswith(("|", "```", "#")) else textwrap.fill(" ".join(b.split()), 76)
              for b in text.strip().split("\n\n")]
    (out / "README.md").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source, out = resolve(args.source), resolve(args.out)
    if not (source / "metadata.csv").is_file():
        sys.exit(f"error: {source / 'metadata.csv'} not found; pass --source")
    if args.max_images < 1 or args.max_side < 1:
        sys.exit("error: --max-images and --max-side must be positive")
    if out.exists():
        extra = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES)
        if extra:
            sys.exit(f"error: {out} holds files this script did not make ({', '.join(extra)}); "
                     "pick another --out")
    date, commit = source_provenance(source)
    header, data = load_rows(source)
    kept, dropped, odd, n_eligible = select(header, data, source, args.max_images, args.seed)

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    col = {name: i for i, name in enumerate(header) if name}
    notes: Counter[str] = Counter()
    for row in kept:
        name = row[col["filename"]].strip()
        note = downsize(source / "images" / name, images / name, args.max_side)
        ext = name.rsplit(".", 1)[-1]
        fmt = note.split()[0]
        if (fmt == "PNG") != (ext.lower() == "png"):
            odd.append(f"{fmt} content under a .{ext} name: {name}")
        notes[note] += 1

    with open(out / "metadata.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *kept])
    size = sum(p.stat().st_size for p in images.iterdir())
    size += (out / "metadata.csv").stat().st_size
    png_as_jpg = sum(1 for line in odd if line.startswith("PNG content"))
    dup_pairs = sorted({" as ".join(re.findall(r"patient ([^\s)]+)", line)[::-1])
                        for line in odd if line.startswith("duplicate")})
    write_readme(out, args, date, commit, header, kept, size, n_eligible, png_as_jpg, dup_pairs)
    size += (out / "README.md").stat().st_size

    print(f"source rows: {len(data)}; eligible: {n_eligible}; kept: {len(kept)}")
    print("dropped:", dict(sorted(dropped.items(), key=lambda kv: -kv[1])))
    for title, key in [("finding", "finding"), ("view", "view"), ("license", "license")]:
        print(f"per {title}:", dict(Counter(r[col[key]] for r in kept).most_common()))
    print("per 3-class group:", dict(Counter(finding_group(r[col["finding"]]) for r in kept).most_common()))
    print("patients:", len({r[col["patientid"]].strip() for r in kept}))
    print("images by format/mode/action:", dict(notes.most_common()))
    print(f"total size: {size} bytes ({size / 1e6:.2f} MB)")
    for line in odd:
        print("note:", line)


if __name__ == "__main__":
    main()
