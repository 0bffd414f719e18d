"""Seeded, stratified, patient-disjoint train/val/test splits, saved to a file and checked for leakage.

Images are grouped so that a group never straddles two splits: one group per
patient, merged with any other image whose file is byte-identical (the same
picture listed twice, under two patients or names, would leak otherwise) and,
where the split is given the images' fingerprints, with any image that is
near-identical to it (cxrnets.fingerprints: the same X-ray re-encoded, resized
or squashed, as public datasets copy each other's).

Where a dataset holds out whole sources (cxrnets.data: the `holdout_sources`
option marks their images `heldout`), those images form a fourth part,
`heldout`, a test set from places the model never trained on; a group with
any held-out image is held out whole, and train/val/test are drawn from the
other sources as usual.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.model_selection import StratifiedGroupKFold

from cxrnets.config import SPLIT_FRACTIONS_RULE, split_fractions_fit
from cxrnets.errors import CxrError
from cxrnets.fingerprints import BITS, NEAR_IDENTICAL_BITS, near_identical_pairs

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
HELDOUT = "heldout"  # images of held-out sources: a test set from elsewhere
LARGE_DATASET = 5000  # images: comparing their fingerprints takes long enough to say so
SHARE_TOLERANCE = 0.05  # a part whose share of the images is further than this from its fraction is warned of


def leakage_groups(patients: pd.Series, sha1: pd.Series,
                   near_identical: list[tuple[int, int, int]] = ()) -> np.ndarray:
    """Connected components of 'same patient', 'same file content' and the `near_identical` pairs of rows
    (cxrnets.fingerprints.near_identical_pairs) as integer group ids."""
    parent = list(range(len(patients)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in (patients.to_numpy(), sha1.to_numpy()):
        first_seen: dict = {}
        for i, value in enumerate(key):
            if value in first_seen:
                parent[find(i)] = find(first_seen[value])
            else:
                first_seen[value] = i
    for i, j, _ in near_identical:
        parent[find(j)] = find(i)
    roots = [find(i) for i in range(len(parent))]
    return pd.factorize(pd.Series(roots))[0]


# StratifiedGroupKFold(shuffle=True) stratifies from scikit-learn 1.8 on: before, it shuffled the groups' class
# counts apart from the groups themselves and held out groups at random (scikit-learn#32540).
STRATIFYING_SCIKIT_LEARN = (1, 8)


def check_splitter(version: str = sklearn.__version__) -> None:
    """Refuse a scikit-learn whose StratifiedGroupKFold would not stratify the split it is asked for."""
    release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if release < STRATIFYING_SCIKIT_LEARN:
        raise CxrError(f"scikit-learn {version} cannot make a stratified split: its StratifiedGroupKFold holds out "
                       "patients at random when it shuffles (fixed in 1.8, scikit-learn#32540); "
                       "pip install 'scikit-learn>=1.8'")


MAX_FOLDS = 20
FOLD_TOLERANCE = 0.1  # relative: one fold of round(1 / fraction) is kept where it is this close to the fraction


def fold_plan(fraction: float, groups: int) -> tuple[int, int]:
    """(m, n): hold out m of n stratified group folds, m / n close to `fraction`.

    One fold of round(1 / fraction) where that is within FOLD_TOLERANCE of the fraction: the defaults (1/7
    for 0.15), and every split made before other fractions could be asked, whose analysis remakes the
    split and must get it again. Elsewhere one fold is far off (0.4 would hold out 1/2) and the closest
    m / n over n up to MAX_FOLDS (and the groups) is taken instead: 2/5 for 0.4, 3/10 for 0.3.
    """
    folds = max(2, round(1 / fraction))
    if abs(1 / folds - fraction) <= FOLD_TOLERANCE * fraction or groups < 2:
        return 1, folds
    _, folds, held = min((abs(m / n - fraction), n, m) for n in range(2, min(MAX_FOLDS, groups) + 1)
                         for m in range(1, n))
    return held, folds


FEWER_FOLDS = ("use a larger dataset, or fractions whose parts take fewer folds (a part of 1/2, 1/3 or 1/4 of the "
               "patients left takes 2, 3 or 4; a small part, or one near the whole, takes many)")


def _hold_out(strata: np.ndarray, groups: np.ndarray, fraction: float, seed: int, part: str) -> np.ndarray:
    """Boolean mask of about `fraction` of the rows, whole groups only, stratified. `part` names what is held
    out, for the errors."""
    count = len(np.unique(groups))
    held_folds, n_splits = fold_plan(fraction, count)
    if count < n_splits:
        raise CxrError(
            f"only {count} patients/groups: too few to hold out {part}, which takes {n_splits} folds; "
            f"{FEWER_FOLDS}"
        )
    largest = np.bincount(strata).max()
    if largest < n_splits:  # StratifiedGroupKFold's ValueError, said in the user's terms
        raise CxrError(
            f"only {largest} images in the largest class: too few to hold out {part} in "
            f"{n_splits} class-stratified folds (one image of a class per fold at least); {FEWER_FOLDS}"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        folds = splitter.split(np.zeros(len(strata)), strata, groups)
        held = np.concatenate([next(folds)[1] for _ in range(held_folds)])
    mask = np.zeros(len(strata), dtype=bool)
    mask[held] = True
    return mask


def make_split(frame: pd.DataFrame, strata: pd.Series, val_fraction: float = 0.15,
               test_fraction: float = 0.15, seed: int = 0, fingerprints: np.ndarray | None = None,
               near_identical_bits: int = NEAR_IDENTICAL_BITS, in_listed_order: bool = False) -> pd.DataFrame:
    """Assign every row of `frame` (columns relpath, patient, sha1, and optionally heldout) to train,
    val or test (and heldout: every group with a held-out image). With `fingerprints` (one per row,
    cxrnets.fingerprints.fingerprints), near-identical images (within `near_identical_bits`) fall on one side,
    as identical files do.

    The split is a function of the images and the seed: the rows are split in the order of their paths, so that
    the same images listed in another order fall on the same sides. `in_listed_order` splits them in the order
    `frame` lists them instead, as splits were made before: what making an earlier split again needs.

    Returns a frame with columns relpath, patient, sha1, stratum, split, in `frame`'s row order.
    """
    check_splitter()
    if not split_fractions_fit(val_fraction, test_fraction):
        raise CxrError(f"--val-fraction {val_fraction:g} and --test-fraction {test_fraction:g}: {SPLIT_FRACTIONS_RULE}")
    listed = frame[["relpath", "patient", "sha1"]].reset_index(drop=True).copy()
    listed["stratum"] = strata.to_numpy()
    marked = frame["heldout"].to_numpy(dtype=bool) if "heldout" in frame else np.zeros(len(listed), dtype=bool)
    order = np.arange(len(listed)) if in_listed_order else _path_order(listed)
    split = listed.iloc[order].reset_index(drop=True)
    marked = marked[order]
    groups = leakage_groups(split["patient"], split["sha1"])
    near_identical: list[tuple[int, int, int]] = []
    if fingerprints is not None:
        groups, near_identical = _join_near_identical(split, groups, np.asarray(fingerprints)[order],
                                                      near_identical_bits)
    _warn_of_contradictory_labels(split, near_identical)
    labels = pd.factorize(split["stratum"])[0]
    assignment = np.full(len(split), "train", dtype=object)
    held = np.isin(groups, groups[marked])
    if (held & ~marked).any():
        log.warning("%d image(s) of kept sources share a patient (or a file) with a held-out source: held out "
                    "with it", int((held & ~marked).sum()))
    assignment[held] = HELDOUT
    kept = np.flatnonzero(~held)
    test = kept[_hold_out(labels[kept], groups[kept], test_fraction, seed,
                          f"a test part of {test_fraction:.0%} (--test-fraction {test_fraction:g})")]
    assignment[test] = "test"
    rest = np.setdiff1d(kept, test)
    left = val_fraction / (1 - test_fraction)
    val = _hold_out(labels[rest], groups[rest], left, seed + 1,
                    f"a validation part of {val_fraction:.0%} (--val-fraction {val_fraction:g}: {left:.0%} of the "
                    "patients the test part left)")
    assignment[rest[val]] = "val"
    split["split"] = assignment
    check_leakage(split)
    _warn_of_parts_off_their_fractions(split.iloc[kept], groups[kept],
                                       {"train": 1 - val_fraction - test_fraction, "val": val_fraction,
                                        "test": test_fraction})
    return split.iloc[np.argsort(order)].reset_index(drop=True)


def _path_order(split: pd.DataFrame) -> np.ndarray:
    """The positions of `split`'s rows sorted by relpath (then patient, sha1 and stratum, for an image listed
    twice): the order make_split splits them in, whatever order they are listed in."""
    keys = ["relpath", "patient", "sha1", "stratum"]
    return split[keys].astype(str).sort_values(keys, kind="stable").index.to_numpy()


def _warn_of_parts_off_their_fractions(split: pd.DataFrame, groups: np.ndarray, fractions: dict[str, float]) -> None:
    """Warn where a part's share of the images of `split` is more than SHARE_TOLERANCE off its asked fraction,
    naming the largest of the `groups` (kept whole on one side), which make it so."""
    shares = split["split"].value_counts(normalize=True).reindex(list(fractions), fill_value=0.0)
    off = [part for part, fraction in fractions.items() if abs(shares[part] - fraction) > SHARE_TOLERANCE]
    if not off:
        return
    sizes = np.bincount(groups)
    largest = [group for group in np.argsort(-sizes, kind="stable")[:3]
               if sizes[group] > 1 and sizes[group] >= 0.01 * len(split)]
    if largest:
        named = []
        for group in largest:
            first = split.iloc[int(np.flatnonzero(groups == group)[0])]
            named.append(f"{sizes[group]} images in {first['split']} (e.g. {first['relpath']}, patient "
                         f"{first['patient']})")
        cause = ("images kept together (one patient's, identical files, near-identical X-rays) go to one part whole, "
                 f"and the largest are too large for the fractions: {'; '.join(named)}. Look at them: where a group is "
                 "not one person's X-rays, fix the patient ids or remove the copies that join it (one near-identical "
                 "image joins two groups); where it is, choose --test-fraction/--val-fraction it fits, or use the "
                 "split knowing its parts' sizes")
    else:
        cause = (f"each image is a group of its own, but {len(split)} images in class-stratified folds come out no "
                 "closer: use a larger dataset, or --test-fraction/--val-fraction it fits")
    log.warning("the split's parts are off the fraction asked: %s; %s",
                ", ".join(f"{part} {shares[part]:.1%} of the images (asked {fractions[part]:.0%})" for part in off),
                cause)


def _join_near_identical(split: pd.DataFrame, groups: np.ndarray, fingerprints: np.ndarray,
                         within: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """`groups` with the groups of near-identical images joined (logged, with the first pair that joined two), and
    the near-identical pairs of rows."""
    if len(split) >= LARGE_DATASET:
        log.info("comparing the fingerprints of %d images to find near-identical ones", len(split))
    pairs = near_identical_pairs(fingerprints, within)
    joined = leakage_groups(split["patient"], split["sha1"], pairs)
    merged = len(np.unique(groups)) - len(np.unique(joined))
    if merged:
        i, j, bits = next((i, j, bits) for i, j, bits in pairs if groups[i] != groups[j])
        log.warning("%d group(s) of images joined others because they hold a near-identical image (the same X-ray "
                    "re-encoded, resized, squashed or windowed otherwise, or the same person's, under another patient "
                    "id or file name): they stay on one side "
                    "of the split; e.g. %s (patient %s) and %s (patient %s), %d of %d fingerprint bits apart; the "
                    "largest group holds %d images (%d before)", merged, split["relpath"][i], split["patient"][i],
                    split["relpath"][j], split["patient"][j], bits, BITS, np.bincount(joined).max(),
                    np.bincount(groups).max())
    return joined, pairs


def _warn_of_contradictory_labels(split: pd.DataFrame, near_identical: list[tuple[int, int, int]]) -> None:
    """Warn, once, of the pictures labelled two ways: identical files, or `near_identical` rows of two patients
    (one patient's X-rays days apart may look alike and rightly differ), whose strata differ."""
    patients = split["patient"].to_numpy()
    other_patients = [(i, j, bits) for i, j, bits in near_identical if patients[i] != patients[j]]
    picture = leakage_groups(pd.Series(range(len(split))), split["sha1"], other_patients)
    labels = split["stratum"].groupby(picture).nunique()
    contradictory = labels.index[labels > 1]
    if len(contradictory) == 0:
        return
    copies = split[picture == contradictory[0]]
    first = copies.iloc[0]
    other = copies[copies["stratum"] != first["stratum"]].iloc[0]
    log.warning("%d picture(s) under two labels (identical files, or near-identical X-rays): the model learns or is "
                "tested on both; e.g. %s labelled %r and %s labelled %r: remove one copy, or fix its label",
                len(contradictory), first["relpath"], first["stratum"], other["relpath"], other["stratum"])


def check_leakage(split: pd.DataFrame) -> None:
    """Fail loudly when a patient or an identical image file falls on two sides of the split."""
    for column, what in (("patient", "patient"), ("sha1", "identical image file")):
        sides = split.groupby(column)["split"].nunique()
        leaking = sides[sides > 1]
        if len(leaking):
            example = leaking.index[0]
            rows = split[split[column] == example]
            parts = [part for part in (*SPLITS, HELDOUT) if part in set(rows["split"])]
            counts = rows["split"].value_counts()
            files = [f"{rows.loc[rows['split'] == part, 'relpath'].iloc[0]} in {part}" for part in parts]
            raise CxrError(
                f"split leaks: {len(leaking)} {what}(s) fall on two sides, e.g. {column}={example!r}: "
                f"{len(rows)} images, {', '.join(f'{counts[part]} in {part}' for part in parts)} "
                f"(such as {', '.join(files)})"
            )


def split_digest(split: pd.DataFrame) -> str:
    """SHA-256 of which image went where (relpath, patient, sha1 and split as text, in the frame's order).

    A study records it when it makes its split, so that an edit of the split file is found without making
    the split again: StratifiedGroupKFold's folds for the same seed differ between scikit-learn releases
    (1.7 and 1.9 split the embedded sample differently).
    """
    text = split[["relpath", "patient", "sha1", "split"]].astype(str).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()


def save_split(split: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(path, index=False)


SPLIT_FILE_COLUMNS = ("relpath", "patient", "sha1", "split")  # and stratum, in files written by save_split


def load_split(path: str | Path, remedy: str = "restore the file, or make the split again") -> pd.DataFrame:
    """The split saved at `path` (parse_split's checks); `remedy` says what to do if it is refused."""
    path = Path(path)
    if path.is_dir():
        raise CxrError(f"{path}: is a folder, not a split file; name a file in it (e.g. {path / 'split.csv'})")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CxrError(f"{path}: cannot read split file ({error})") from error
    return parse_split(data, path, remedy)


def parse_split(data: bytes, name: str | Path, remedy: str) -> pd.DataFrame:
    """A split file's content (`data`, from the file `name`), refused with CxrError naming the file, what is
    wrong with it and `remedy` where it is empty, cut short, not a split file, names a part other than
    train/val/test/heldout, lacks train, val or test images, or leaks."""
    if not data.strip():
        raise CxrError(f"{name}: the split file is empty; {remedy}")
    try:
        split = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as error:  # UnicodeDecodeError is a ValueError
        raise CxrError(f"{name}: not a split file ({str(error).splitlines()[0]}); {remedy}") from error
    missing = set(SPLIT_FILE_COLUMNS) - set(split.columns)
    if missing:
        raise CxrError(f"{name}: not a split file, missing columns {sorted(missing)}; {remedy}")
    if not data.endswith(b"\n"):  # save_split ends every line, the last one too
        raise CxrError(f"{name}: the split file looks cut short (its last line is incomplete: "
                       f"{data.splitlines()[-1][-60:].decode(errors='replace')!r}); {remedy}")
    parts = split["split"].value_counts()
    unknown = [part for part in parts.index if part not in (*SPLITS, HELDOUT)]
    if unknown:
        first = int(np.flatnonzero(split["split"].isin(unknown))[0]) + 2
        raise CxrError(f"{name}: lists split names other than {', '.join((*SPLITS, HELDOUT))}: "
                       f"{', '.join(f'{part!r} ({parts[part]} rows)' for part in unknown)}, first on line {first}; "
                       f"{remedy}")
    lacking = [part for part in SPLITS if part not in parts.index]
    if lacking:
        raise CxrError(f"{name}: lists no {' and no '.join(lacking)} image (it has {describe(split) or 'no rows'}); "
                       f"{remedy}")
    try:
        check_leakage(split)
    except CxrError as error:
        raise CxrError(f"{name}: {error}") from None
    return split


def patients_per_class(split: pd.DataFrame, part: str) -> pd.Series:
    """How many patients of each class (each label of a multi-label stratum) the split's `part` holds,
    0 for a class it lacks, indexed by class name."""
    labels = split.assign(label=split["stratum"].astype(str).str.split("|")).explode("label")
    labels = labels[labels["label"] != ""]
    every = sorted(labels["label"].unique())
    return labels[labels["split"] == part].groupby("label")["patient"].nunique().reindex(every, fill_value=0)


def describe(split: pd.DataFrame) -> str:
    counts = split.groupby("split").agg(images=("relpath", "size"), patients=("patient", "nunique"))
    return ", ".join(f"{name} {counts.loc[name, 'images']} images/{counts.loc[name, 'patients']} patients"
                     for name in (*SPLITS, HELDOUT) if name in counts.index)
