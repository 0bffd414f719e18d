"""External evaluation and held-out sources: the selected models on images from elsewhere, with
partial classes, a label map, left-out labels, undecodable images, and their Grad-CAM figures."""

from __future__ import annotations

import csv
import logging
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrnets.errors import CxrError
from cxrnets.data import SAMPLE_ROOT, DatasetIndex
from study.analysis.external import ALL_PRESENT, HELDOUT_SET, compare, parse_externals, parse_label_map
from study.analysis.uncertainty import BASELINE, independent_difference_interval, proportion_interval
from study.analyze import analyze, main
from PIL import Image

GRID_DATASET = "covid-chestxray-3class"  # the dataset of conftest.grid_study

# The external set: a different source (synthetic images, another naming of the classes), with a class
# the study lacks and none of its "Other pneumonia".
EXTERNAL_ROWS = ([("COVID-19", f"b{p}", 200) for p in range(4) for _ in range(2)]
                 + [("No finding", f"n{p}", 60) for p in range(5)]
                 + [("Tuberculosis", "t0", 130), ("Tuberculosis", "t1", 130)])


def external_csv(root: Path) -> Path:
    rows = []
    (root / "img").mkdir(parents=True)
    for i, (label, patient, brightness) in enumerate(EXTERNAL_ROWS):
        name = f"img/{i:02d}.png"
        pixels = np.random.default_rng(70_000 + i).normal(brightness, 20, (80, 80)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / name)
        rows.append({"path": name, "finding": label, "subject": patient})
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    rows.append({"path": "img/broken.png", "finding": "COVID-19", "subject": "b9"})
    with (root / "labels.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["path", "finding", "subject"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


EXTERNAL_ARGS = ["--dataset-option", "hospital-b:label_column=finding",
                 "--dataset-option", "hospital-b:patient_column=subject"]


@pytest.fixture(scope="module")
def external_analysis(grid_study, tmp_path_factory):
    work = tmp_path_factory.mktemp("external")
    labels = external_csv(work / "hospital-b")
    specs = parse_externals([f"hospital-b=csv:{labels}"], [a for a in EXTERNAL_ARGS if a != "--dataset-option"])
    label_map = parse_label_map(["No finding=No Finding"])
    analysis = analyze(grid_study, out=work / "report", resamples=200, importance="none", externals=specs,
                       label_map=label_map)
    return analysis, work


def test_the_external_set_is_read_with_its_options_and_label_map(external_analysis):
    analysis, _ = external_analysis
    [external] = analysis.external_sets
    assert external.name == "hospital-b"
    assert len(external.y_true) == 13 and len(np.unique(external.groups)) == 9  # 8 COVID-19 + 5 No Finding
    assert external.left_out == {"Tuberculosis": 2}
    assert external.skipped.get("undecodable image") == 1
    assert [c for c, here in zip(external.classes, external.present) if not here] == ["Other pneumonia"]
    summary = external.summary()
    assert "absent: Other pneumonia" in summary and "Tuberculosis 2" in summary and "undecodable image 1" in summary


def test_each_cell_is_compared_on_what_exists_with_partial_classes(external_analysis):
    analysis, _ = external_analysis
    table = analysis.external
    assert set(table["model"]) == {"alexnet", "resnet50", BASELINE} and set(table["set"]) == {"hospital-b"}
    for model in ("alexnet", "resnet50"):
        rows = table[table["model"] == model].set_index(["metric", "class"])
        absent = rows.loc[("recall", "Other pneumonia")]
        assert np.isnan(absent["external"]) and absent["note"] == "absent from hospital-b"
        assert np.isnan(rows.loc[("roc_auc", "Other pneumonia"), "external"])
        # The mean recall runs over the classes present in both sets: COVID-19 and No Finding.
        recall = rows.loc[("recall", "COVID-19"), "external"], rows.loc[("recall", "No Finding"), "external"]
        assert rows.loc[("recall_present", ALL_PRESENT), "external"] == pytest.approx(np.mean(recall))
        accuracy = rows.loc[("accuracy", ALL_PRESENT)]
        assert accuracy["external_lower"] <= accuracy["external"] <= accuracy["external_upper"]
        assert accuracy["change"] == pytest.approx(accuracy["external"] - accuracy["internal"])
        # 8 COVID-19 and 5 No Finding images: accuracy is the support-weighted mean of the two recalls
        assert accuracy["external"] == pytest.approx((8 * recall[0] + 5 * recall[1]) / 13)
        internal = [s for s in analysis.selected if s.model == model and s.rank == 1][0].evaluation
        assert accuracy["internal"] == pytest.approx(internal.metrics["test/accuracy"])
        assert rows.loc[("recall", "COVID-19"), "external_images"] == 8
    # The majority-class predictor (COVID-19, the training split's largest class): its accuracy on the
    # set is the set's share of COVID-19 images, the part of any change that the class mix alone makes.
    constant = table[table["model"] == BASELINE].set_index(["metric", "class"])
    assert constant.loc[("accuracy", ALL_PRESENT), "external"] == pytest.approx(8 / 13)
    assert constant.loc[("roc_auc_present", ALL_PRESENT), "external"] == pytest.approx(0.5)
    # Its recalls are 1 (COVID-19) and 0 (No Finding) in every resample of either set; a recall is a
    # proportion: the exact interval over the class's patients (4 and 5 in the set; at 0 or 1 each counts
    # once), and the change combining the two (MOVER).
    internal = [s for s in analysis.selected if s.rank == 1][0].evaluation
    for k, name, value, patients in ((0, "COVID-19", 1.0, 4), (2, "No Finding", 0.0, 5)):
        row = constant.loc[("recall", name)]
        assert row["external"] == row["internal"] == value
        members = internal.y_true == k
        outside = proportion_interval(np.full(patients, value == 1.0), np.arange(patients))
        inside = proportion_interval(np.full(members.sum(), value == 1.0), internal.groups[members])
        assert (row["external_lower"], row["external_upper"]) == pytest.approx(outside)
        assert (row["internal_lower"], row["internal_upper"]) == pytest.approx(inside)
        assert (row["change_lower"], row["change_upper"]) == pytest.approx(
            independent_difference_interval(value, outside, value, inside))
        assert row["change_lower"] < 0 < row["change_upper"]


def test_a_class_of_one_patient_leaves_the_resampled_figures_of_its_side_without_interval():
    """No Finding has one patient in the external set: a resample of the set holds him or no No Finding, so the mean
    recall and ROC AUC over the classes present, and No Finding's ROC AUC, have no interval there, nor
    their change; nor has COVID-19's ROC AUC, whose negatives are that patient's images alone (undefined in a
    resample without him); No Finding's recall keeps the exact interval over one patient, and accuracy its
    interval."""
    classes = ["COVID-19", "Other pneumonia", "No Finding"]
    rng = np.random.default_rng(0)
    y_in = np.repeat([0, 1, 2], [20, 10, 10])
    internal = types.SimpleNamespace(y_true=y_in, groups=np.arange(40) // 2, split="test")
    y_out = np.r_[np.zeros(12, int), [2, 2, 2]]
    external = types.SimpleNamespace(name="b", classes=classes, y_true=y_out, groups=np.r_[np.arange(12), [50, 50, 50]])
    scores_in, scores_out = rng.dirichlet(np.ones(3), len(y_in)), rng.dirichlet(np.ones(3), len(y_out))
    rows = compare({"model": "m"}, internal, scores_in, external, scores_out, 300, 0, 1)
    table = {(row["metric"], row["class"]): row for row in rows}
    for key in (("recall_present", ALL_PRESENT), ("roc_auc_present", ALL_PRESENT), ("roc_auc", "No Finding"),
                ("roc_auc", "COVID-19")):
        row = table[key]
        assert np.isnan([row["external_lower"], row["external_upper"], row["change_lower"], row["change_upper"]]).all()
        assert row["internal_lower"] <= row["internal"] <= row["internal_upper"]  # 5 patients inside
    for key in (("accuracy", ALL_PRESENT), ("recall", "No Finding"), ("recall", "COVID-19")):
        row = table[key]
        assert row["external_lower"] <= row["external"] <= row["external_upper"] and not np.isnan(row["change_lower"])


ONE_IMAGE_PER_PATIENT = np.repeat([0, 2], [12, 6])  # COVID-19 and No Finding, as a folder set without patient ids


def constant_and_perfect_on_a_set_of_one_image_per_patient() -> dict[str, dict]:
    """compare's rows, by model, metric and class, of a constant predictor (always COVID-19) and of a perfect one on an
    external set of 18 patients with one image each (12 COVID-19, 6 No Finding) and on an internal split of
    patients with two images each."""
    classes = ["COVID-19", "Other pneumonia", "No Finding"]
    y_in = np.repeat([0, 1, 2], [20, 10, 10])
    internal = types.SimpleNamespace(y_true=y_in, groups=np.arange(40) // 2, split="test")
    y_out = ONE_IMAGE_PER_PATIENT
    external = types.SimpleNamespace(name="ext1", classes=classes, y_true=y_out, groups=np.arange(len(y_out)))
    tables = {}
    for model, guess in (("always COVID-19", lambda y: np.zeros_like(y)), ("perfect", lambda y: y)):
        scores_in, scores_out = np.eye(3)[guess(y_in)] * 0.8 + 0.05, np.eye(3)[guess(y_out)] * 0.8 + 0.05
        rows = compare({"dataset": "d", "model": model, "trial_id": "t"}, internal, scores_in, external, scores_out,
                       300, 0, 1)
        tables[model] = {(row["metric"], row["class"]): row for row in rows}
    return tables


def test_accuracy_gets_the_exact_interval_over_the_patients_where_every_resample_gives_the_same():
    """Each resample keeps each class's patients, here one image each: where every class's images are all right or
    all wrong, accuracy is the same in every resample. It is a proportion of images: its interval is the exact one
    with the patients as clusters (12 of 18 right, 18 of 18 right: not [0.67, 0.67], [1.00, 1.00]), its change the
    two sides' combined (MOVER)."""
    tables = constant_and_perfect_on_a_set_of_one_image_per_patient()
    y_in = np.repeat([0, 1, 2], [20, 10, 10])
    for model, right_in, right_out in (("always COVID-19", y_in == 0, ONE_IMAGE_PER_PATIENT == 0),
                                       ("perfect", np.ones(40, bool), np.ones(18, bool))):
        row = tables[model][("accuracy", ALL_PRESENT)]
        outside = proportion_interval(right_out, np.arange(18))
        inside = proportion_interval(right_in, np.arange(40) // 2)
        assert (row["external_lower"], row["external_upper"]) == pytest.approx(outside)
        assert (row["internal_lower"], row["internal_upper"]) == pytest.approx(inside)
        assert (row["change_lower"], row["change_upper"]) == pytest.approx(
            independent_difference_interval(row["external"], outside, row["internal"], inside))
        assert row["external_upper"] - row["external_lower"] > 0.1 and row["no_spread"] == ""
    perfect = tables["perfect"][("accuracy", ALL_PRESENT)]
    assert perfect["external_lower"] == pytest.approx(0.025 ** (1 / 18))  # Clopper-Pearson, 18 of 18
    assert perfect["external_upper"] == 1.0


def test_a_resampled_figure_the_same_in_every_resample_has_no_spread_with_the_reason(tmp_path):
    """The mean recall over the classes present of a constant predictor, 1 and 0 in every resample, and its ROC AUC,
    all ties: no zero-width interval, but `[no spread]` in the report, and why."""
    from study.analysis.report import elsewhere_section
    from study.analysis.report_tables import external_tables

    tables = constant_and_perfect_on_a_set_of_one_image_per_patient()
    constant = tables["always COVID-19"]
    for key in (("recall_present", ALL_PRESENT), ("roc_auc_present", ALL_PRESENT), ("roc_auc", "COVID-19")):
        row = constant[key]
        assert np.isnan([row["external_lower"], row["external_upper"], row["internal_lower"],
                         row["internal_upper"], row["change_lower"], row["change_upper"]]).all(), key
        assert "the same in every resample" in row["no_spread"], key
    assert "all right, or all wrong" in constant[("recall_present", ALL_PRESENT)]["no_spread"]
    assert "all level with" in constant[("roc_auc_present", ALL_PRESENT)]["no_spread"]

    rows = [row for table in tables.values() for row in table.values()]
    analysis = types.SimpleNamespace(external=pd.DataFrame(rows), split="test", saliency=[], external_sets=[
        types.SimpleNamespace(name="ext1", dataset="d", description="folder at /ext", patient_ids=False,
                              summary=lambda: "ext1: 18 images (COVID-19 12, No Finding 6)")])
    analysis.tables = external_tables(analysis)
    report = "\n".join(elsewhere_section(analysis, figures=False))
    assert re.search(r"\| always COVID-19 +\| ext1 +\| 0.500 \[no spread\] +\| 0.500 \[no spread\] +\| \+0.000 +\|", report)
    assert "[0.67, 0.67]" not in report and "[0.50, 0.50]" not in report and "[1.00, 1.00]" not in report
    assert "No spread: mean recall of the classes present" in report and "all right, or all wrong" in report


def test_the_report_shows_the_comparison_and_the_gradcam_figures(external_analysis):
    analysis, work = external_analysis
    report = (work / "report" / "report.md").read_text()
    assert "## Elsewhere: held-out sources and external sets" in report
    assert "- grid" not in report and "on hospital-b: accuracy" in report
    assert "### Where the models look (Grad-CAM)" in report
    assert (work / "report" / "tables" / "external_evaluation.csv").is_file()
    for model in ("alexnet", "resnet50"):
        figure = work / "report" / "figures" / f"gradcam_{GRID_DATASET}_{model}.png"
        assert figure.is_file() and f"figures/{figure.name}" in report
    panels = {panel.model: panel for panel in analysis.saliency}
    assert [row.name for row in panels["resnet50"].rows] == ["internal test", "hospital-b"]
    internal, external = panels["resnet50"].rows
    # two per present class: the internal test split holds one No Finding image
    assert len(internal.images) == 5 and len(external.images) == 4
    assert list(internal.true).count("No Finding") == 1 and set(external.true) == {"COVID-19", "No Finding"}
    assert internal.maps.shape == (5, 64, 64) and 0 <= internal.maps.min() and internal.maps.max() <= 1
    # a map per image, not one for all (a model on the constant prediction may leave every map of a set flat)
    assert any(not np.allclose(row.maps[0], other) for panel in analysis.saliency for row in panel.rows
               for other in row.maps[1:])


def test_each_model_meets_the_external_set_at_its_own_image_size(grid_study, tmp_path, monkeypatch):
    """A space may search image_size: a model trained at 96 px is scored, and its Grad-CAM drawn, on the
    external images decoded at 96 px, not at the first model's 64."""
    import dataclasses

    from study.analysis.evaluation import StudyData

    train_config = StudyData.train_config

    def resnet50_at_96_px(self, checkpoint):
        config = train_config(self, checkpoint)
        return dataclasses.replace(config, image_size=96) if config.model == "resnet50" else config

    monkeypatch.setattr(StudyData, "train_config", resnet50_at_96_px)
    labels = external_csv(tmp_path / "hospital-b")
    specs = parse_externals([f"hospital-b=csv:{labels}"], [a for a in EXTERNAL_ARGS if a != "--dataset-option"])
    analysis = analyze(grid_study, out=tmp_path / "report", resamples=0, importance="none", externals=specs,
                       label_map=parse_label_map(["No finding=No Finding"]), saliency=1)
    assert sorted(s.image_size for s in analysis.external_sets) == [64, 96]
    for external in analysis.external_sets:
        assert external.images[external.rows[:1]].shape[-1] == external.image_size
    panels = {panel.model: panel for panel in analysis.saliency}
    assert {row.images.shape[-1] for row in panels["resnet50"].rows} == {96}
    assert {row.images.shape[-1] for row in panels["alexnet"].rows} == {64}
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.count("- **hospital-b** (") == 1


def test_the_study_s_own_images_are_left_out_of_a_set_read_by_its_loader(grid_study, tmp_path):
    """The whole embedded sample as an external set of a study trained on part of it: the images (and the
    patients) the study split into train, val and test are left out, counted and named, and so are the copies
    of two of them that the sample files under another patient (patient 178's of patient 97's); the rest is
    scored."""
    import pandas as pd

    from cxrnets.data import load_dataset

    split = pd.read_csv(grid_study / "splits" / f"{GRID_DATASET}.csv", dtype=str, keep_default_na=False)
    sample = load_dataset(GRID_DATASET, SAMPLE_ROOT).frame
    own = sample["relpath"].isin(split["relpath"]) | sample["patient"].isin(split["patient"])
    analysis = analyze(grid_study, out=tmp_path / "report", resamples=0, importance="none", saliency=0,
                       formats=("md",), externals=parse_externals([f"sample={GRID_DATASET}:{SAMPLE_ROOT}"], None))
    [external] = analysis.external_sets
    assert own.sum() >= len(split) and len(external.y_true) == (~own).sum() - 2 > 0
    left_out = (f"{own.sum()} images of {sample.loc[own, 'patient'].nunique()} patients the study's split of "
                f"{GRID_DATASET} already holds (the same patient ids or file names, e.g. ")
    assert external.in_study_split.startswith(left_out)
    copies = (f"2 images of 1 patients near-identical to images the study's split of {GRID_DATASET} holds (the same "
              "X-ray re-encoded, resized or squashed, e.g. images/16660_2_1.jpg and the study's images/covid-19-"
              "rapidly-progressive-acute-respiratory-distress-syndrome-ards-admission.jpg)")
    assert external.near_identical == copies
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"- **sample** ({GRID_DATASET} at {SAMPLE_ROOT}): {(~own).sum() - 2} images" in report
    assert f"left out: {left_out}" in report and f"left out: {copies}" in report


def test_only_the_same_files_count_as_the_study_s_own_in_a_folder_or_csv_of_anyone_s_images(tmp_path):
    """Two hospitals' CSVs may both name patients 1 to 4 and images img/00.png to img/03.png: other images."""
    import pandas as pd

    from study.analysis.external import ExternalIndex, ExternalSpec, without_study_images

    def index(root: Path, numbers: range) -> ExternalIndex:
        frame = pd.DataFrame({"relpath": [f"img/{i:02d}.png" for i in numbers],
                              "patient": [str(i + 1) for i in numbers], "labels": [("COVID-19",)] * len(numbers)})
        return ExternalIndex(DatasetIndex("csv", root, frame, ["COVID-19", "No Finding"]))

    study = index(tmp_path / "a", range(4)).index
    split = study.frame.assign(split=["train", "train", "val", "test"])
    spec = ExternalSpec("b", "csv", str(tmp_path / "b" / "labels.csv"))
    other_hospital = without_study_images(spec, index(tmp_path / "b", range(4)), study, split)
    assert len(other_hospital.index.frame) == 4 and other_hospital.in_study_split == ""
    beside = without_study_images(spec, index(tmp_path / "b" / ".." / "a", range(2, 6)), study, split)
    assert list(beside.index.frame["relpath"]) == ["img/04.png", "img/05.png"]
    assert beside.in_study_split.startswith("2 images of 2 patients the study's split of csv already holds (the same "
                                            "image files")
    with pytest.raises(CxrError, match=r"--external b: all 4 images of 4 patients the study's split of csv already "
                                       r"holds .*nothing from elsewhere is left to evaluate"):
        without_study_images(spec, index(tmp_path / "a", range(4)), study, split)


def two_hospitals_study(tmp_path: Path) -> types.SimpleNamespace:
    """What check_externals reads of a study of a CSV dataset (hospital-a) and a folder dataset (hospital-b), both
    of classes covid and normal, checked in that order, whose splits hold every image; and a folder of 6 other
    X-rays (elsewhere) that holds a copy of hospital-a's covid-0.png as covid/copy.png."""
    from cxrnets.data import load_dataset

    def x_ray(path: Path, seed: int, brightness: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).normal(brightness, 30, (80, 80)).clip(0, 255).astype(np.uint8)
                        ).save(path)

    rows = []
    for k, (label, brightness) in enumerate({"covid": 200, "normal": 60}.items()):
        for i in range(3):
            x_ray(tmp_path / "hospital-a" / f"{label}-{i}.png", 100 * k + i, brightness)
            rows.append({"path": f"{label}-{i}.png", "label": label})
            x_ray(tmp_path / "hospital-b" / label / f"{i}.png", 1000 + 100 * k + i, brightness)
            x_ray(tmp_path / "elsewhere" / label / f"{i}.png", 2000 + 100 * k + i, brightness)
    with (tmp_path / "hospital-a" / "labels.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(tmp_path / "hospital-a" / "covid-0.png", tmp_path / "elsewhere" / "covid" / "copy.png")
    roots = {"csv": tmp_path / "hospital-a" / "labels.csv", "folder": tmp_path / "hospital-b"}
    splits = {name: load_dataset(name, root).frame[["relpath", "patient"]].assign(split="train")
              for name, root in roots.items()}
    return types.SimpleNamespace(study=types.SimpleNamespace(settings=types.SimpleNamespace(
        dataset_options={}, image_size=64)), data_roots=roots, split=splits.get, cache_dir=str(tmp_path / "cache"))


def test_a_copy_of_one_study_dataset_s_x_ray_stays_out_though_the_set_shares_another_dataset_s_loader(tmp_path):
    """An external folder of other X-rays that holds a copy of one of the CSV dataset's: the copy is left out of
    the set for both datasets' models, though the folder dataset, checked after the CSV one, reads the set with
    its own loader (which leaves out the folder dataset's own files)."""
    from study.analysis.external import ExternalSpec, check_externals, load_external

    data = two_hospitals_study(tmp_path)
    spec = ExternalSpec("elsewhere", "folder", str(tmp_path / "elsewhere"))
    indexes = check_externals(data, [spec], {})
    assert indexes["elsewhere"].near_relpaths == {"covid/copy.png"}
    for dataset in data.data_roots:
        external = load_external(spec, indexes["elsewhere"], dataset, ["covid", "normal"], {}, 64, data.cache_dir)
        assert len(external.y_true) == 6 and "covid/copy.png" in external.near_identical


def test_a_set_of_one_study_dataset_s_files_and_another_s_copies_is_refused(tmp_path):
    """hospital-b's own folder, to which a copy of a hospital-a X-ray was added after the split: nothing of it
    comes from elsewhere."""
    from study.analysis.external import ExternalSpec, check_externals

    data = two_hospitals_study(tmp_path)
    shutil.copy(tmp_path / "hospital-a" / "covid-0.png", tmp_path / "hospital-b" / "covid" / "copy.png")
    with pytest.raises(CxrError, match=r"--external b-again: 6 images of 6 patients the study's split of folder "
                                       r"already holds .*, and 1 images of 1 patients near-identical to images the "
                                       r"study's split of csv holds .*: nothing from elsewhere is left to evaluate"):
        check_externals(data, [ExternalSpec("b-again", "folder", str(tmp_path / "hospital-b"))], {})


def test_a_set_whose_only_images_of_the_study_s_classes_are_copies_of_its_x_rays_is_refused_saying_so(tmp_path):
    """A folder of three tuberculosis X-rays and a copy of hospital-a's covid-0.png as covid: without the copy, left
    out, nothing of the study's classes is left. It is refused before any evaluation, naming the copies, not said to
    share no class with the study (as load_external said after every evaluation)."""
    from study.analysis.external import ExternalSpec, check_externals

    data = two_hospitals_study(tmp_path)
    root = tmp_path / "tuberculosis-and-a-copy"
    shutil.copytree(tmp_path / "elsewhere" / "normal", root / "tuberculosis")  # other X-rays
    (root / "covid").mkdir()
    shutil.copy(tmp_path / "hospital-a" / "covid-0.png", root / "covid" / "copy.png")
    with pytest.raises(CxrError, match=r"--external tb: its covid images are all copies of the study's X-rays \(1 "
                                       r"images of 1 patients near-identical to images the study's split of csv holds "
                                       r"\(.*e\.g\. covid/copy\.png and the study's covid-0\.png\)\), left out, and "
                                       r"its other classes, \['tuberculosis'\], are none of the study's"):
        check_externals(data, [ExternalSpec("tb", "folder", str(root))], {})


RADIOGRAPHY_MAP = {"COVID": "COVID-19", "Normal": "No Finding", "Viral Pneumonia": "Other pneumonia"}


def the_sample_as_a_study(tmp_path: Path) -> types.SimpleNamespace:
    """What check_externals reads of a study (study.analysis.evaluation.StudyData): one whose split holds every
    image of the embedded sample, at 64 px."""
    from cxrnets.data import load_dataset

    split = load_dataset(GRID_DATASET, SAMPLE_ROOT).frame[["relpath", "patient"]].assign(split="train")
    settings = types.SimpleNamespace(dataset_options={}, image_size=64)
    return types.SimpleNamespace(study=types.SimpleNamespace(settings=settings), data_roots={GRID_DATASET: SAMPLE_ROOT},
                                 split=lambda dataset: split, cache_dir=str(tmp_path / "cache"))


def test_an_external_set_s_copies_of_the_study_s_x_rays_are_left_out_and_counted(tmp_path, make_radiography,
                                                                                make_radiography_copies, caplog):
    """Dataset 1 holds dataset 3's X-rays squashed to 299x299 PNG: in it as an external set of a study of dataset 3,
    those copies are the study's own images, whatever their names: left out, counted and named, in the log and in
    the set's line of the report; the set's other images are scored."""
    from study.analysis.external import ExternalSpec, check_externals, load_external

    root = make_radiography(per_class=3)
    copies, _ = make_radiography_copies(tmp_path / "copies", per_class=1)
    for name in ("COVID", "Normal"):
        shutil.copy(copies / name / "images" / f"{name}-1.png", root / name / "images" / f"copy-{name}.png")
    data = the_sample_as_a_study(tmp_path)
    spec = ExternalSpec("kaggle", "covid-radiography", str(root))
    with caplog.at_level(logging.WARNING, logger="study.analyze"):
        indexes = check_externals(data, [spec], RADIOGRAPHY_MAP)
    external = load_external(spec, indexes["kaggle"], GRID_DATASET, ["COVID-19", "Other pneumonia", "No Finding"],
                             RADIOGRAPHY_MAP, 64, data.cache_dir)
    assert len(external.y_true) == 9 and external.left_out == {"Lung_Opacity": 3}
    left_out = (r"2 images of 2 patients near-identical to images the study's split of covid-chestxray-3class holds "
                r"\(the same X-ray re-encoded, resized or squashed, e\.g\. COVID/images/copy-COVID\.png and the "
                r"study's images/\S+\)")
    assert re.search(f"; left out: {left_out}", external.summary())
    assert re.search(f"--external kaggle: {left_out} were left out", caplog.text)


def radiography_study_data(tmp_path, make_radiography):
    """A study's data as the external checks read it: a small covid-radiography set, all of it in train."""
    from cxrnets.data import load_dataset

    study_root = make_radiography(per_class=3)
    study_index = load_dataset("covid-radiography", study_root)
    split = study_index.frame[["relpath", "patient"]].assign(split="train")
    data = types.SimpleNamespace(study=types.SimpleNamespace(settings=types.SimpleNamespace(
        dataset_options={}, image_size=64)), data_roots={"covid-radiography": study_root},
        split=lambda dataset: split, cache_dir=str(tmp_path / "cache"))
    return study_index, data


def test_an_external_set_s_x_ray_filed_twice_is_one_patient_of_its_intervals(tmp_path, make_radiography,
                                                                             make_radiography_copies):
    """An external set that holds an X-ray twice, under two names (two patients to its loader), resamples the two
    as one patient: the set's line of the report counts them once."""
    from study.analysis.external import ExternalSpec, check_externals, load_external

    study_index, data = radiography_study_data(tmp_path, make_radiography)
    root, copies = make_radiography_copies(tmp_path / "copies")
    spec = ExternalSpec("kaggle", "covid-radiography", str(root))
    indexes = check_externals(data, [spec], {})
    external = load_external(spec, indexes["kaggle"], "covid-radiography", list(study_index.classes), {}, 64,
                             data.cache_dir)
    assert external.summary().startswith(f"kaggle: 28 images, no patient ids: resampled as {28 - len(copies)} once "
                                         "near-identical X-rays are joined (")


def test_an_external_set_without_patient_ids_is_said_to_be_resampled_by_image(tmp_path, make_radiography,
                                                                            make_pneumonia_normal):
    """covid-pneumonia-normal names no patients: the set's line counts images, not patients, and the section says its
    intervals count the same person's X-rays as independent."""
    from study.analysis.external import ExternalSpec, check_externals, load_external
    from study.analysis.report import elsewhere_section

    study_index, data = radiography_study_data(tmp_path, make_radiography)
    spec = ExternalSpec("kaggle-2", "covid-pneumonia-normal", str(make_pneumonia_normal(per_class=4)))
    label_map = {"covid": "COVID", "normal": "Normal", "pneumonia": "Viral Pneumonia"}
    indexes = check_externals(data, [spec], label_map)
    external = load_external(spec, indexes["kaggle-2"], "covid-radiography", list(study_index.classes), label_map,
                             64, data.cache_dir)
    assert not external.patient_ids
    assert external.summary().startswith("kaggle-2: 12 images, no patient ids (")
    rows = compare({"dataset": "covid-radiography", "model": "m", "trial_id": "t"},
                   types.SimpleNamespace(y_true=np.repeat([0, 1, 2, 3], 3), groups=np.arange(12), split="test"),
                   np.full((12, 4), 0.25), external, np.full((12, 4), 0.25), 0, 0, 1)
    analysis = types.SimpleNamespace(external=pd.DataFrame(rows), split="test", saliency=[], tables={},
                                     external_sets=[external])
    section = "\n".join(elsewhere_section(analysis, figures=False))
    assert "kaggle-2 has no patient ids: resampled by image" in section
    assert "count as independent" in section and "optimistic" in section


def test_an_external_set_of_nothing_but_copies_of_the_study_s_x_rays_is_refused(tmp_path, make_radiography_copies):
    from study.analysis.external import ExternalSpec, check_externals

    root, _ = make_radiography_copies()
    with pytest.raises(CxrError, match=r"--external kaggle: all 28 images of 28 patients near-identical to images "
                                       r"the study's split of covid-chestxray-3class holds .*nothing from elsewhere"):
        check_externals(the_sample_as_a_study(tmp_path), [ExternalSpec("kaggle", "covid-radiography", str(root))],
                        RADIOGRAPHY_MAP)


@pytest.mark.parametrize("flags, message", [
    (["--external", "x=csv:{labels}", "--label-map", "No finding=Healthy"],
     r"--label-map maps 'No finding' to 'Healthy', which is no class of the study \(COVID-19, Other pneumonia, "
     r"No Finding\)"),
    (["--external", "x=csv:{labels}", "--dataset-option", "x:label_column=subject"],
     r"--external x: no class in common with the study: the set's classes are \['b0', .*\], the study's "
     r"\['COVID-19', 'Other pneumonia', 'No Finding'\]"),
    (["--external", "x=csv:{tmp}/nowhere.csv"],
     r"--external x: data root .*nowhere.csv does not exist: pass the PATH of --external NAME=DATASET:PATH "
     r"pointing at the csv dataset"),
    (["--external", "x=csv:{labels}"], r"--external x: .*labels.csv: missing column\(s\) \['label'\]"),
    (["--external", "x=csv:{tmp}/set"], r"--external x: .*set: the csv dataset takes the CSV file itself as the "
                                        r"PATH of --external NAME=DATASET:PATH"),
    (["--external", "x=folder:{labels}"], r"--external x: .*labels.csv: is a file, not a folder; pass the folder "
                                          r"dataset's folder as the PATH of --external"),
    (["--external", "x=lungs:{labels}"], r"--external 'x=lungs:.*': unknown dataset 'lungs'"),
    (["--external", "x"], r"--external 'x': write NAME=DATASET:PATH"),
    (["--dataset-option", "label_column=finding"], r"--dataset-option in the analysis applies to --external sets"),
    (["--external", "x=covid-chestxray:{study_data}"],
     r"--external x: covid-chestxray is multi-label; external evaluation scores single-label sets"),
    (["--external", f"x={GRID_DATASET}:{{study_data}}"],
     r"--external x: all \d+ images of \d+ patients the study's split of covid-chestxray-3class already holds \(the "
     r"same patient ids or file names, e.g\. .*\): the study trained, chose or tested its models on them"),
])
def test_bad_external_input_is_refused_before_any_evaluation(grid_study, tmp_path, capsys, caplog, flags, message):
    caplog.set_level(logging.INFO, logger="study.analyze")
    labels = external_csv(tmp_path / "set")
    argv = [str(grid_study), "--out", str(tmp_path / "report"), "--bootstrap", "0", "--importance", "none",
            *[flag.format(labels=labels, tmp=tmp_path, study_data=grid_study.parents[1] / "data") for flag in flags]]
    looks = sorted((grid_study / "analyses").glob("*.json"))
    assert main(argv) == 2
    err = capsys.readouterr().err  # Ray's workers may still stream a line to the driver's stderr
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    assert re.search(message, errors[0]), err
    assert not (tmp_path / "report").exists()
    assert sorted((grid_study / "analyses").glob("*.json")) == looks  # no look at the test split recorded
    assert not [record for record in caplog.records if "evaluating trial" in record.getMessage()]


def test_a_checkpoint_of_other_classes_is_skipped_and_the_next_trial_evaluated(grid_study, tmp_path):
    """Weights of another study's classes in place of a cell's best: reported, skipped; the cell's next
    best trial is evaluated internally and elsewhere."""
    import torch

    from study.analysis.reading import open_study

    study_dir = tmp_path / "grid"
    shutil.copytree(grid_study, study_dir)
    first = analyze(study_dir, out=tmp_path / "first", resamples=0, importance="none", formats=("csv",))
    best = first.best(GRID_DATASET, "resnet50").candidate.trial_id
    weights = Path(open_study(study_dir).weights[best].uri)
    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["classes"] = ["normal", "covid", "pneumonia"]
    torch.save(checkpoint, weights)
    labels = external_csv(tmp_path / "set")
    analysis = analyze(study_dir, out=tmp_path / "second", resamples=0, importance="none", formats=("csv",),
                       externals=parse_externals([f"b=csv:{labels}"], ["label_column=finding"]),
                       label_map={"No finding": "No Finding"})
    assert any(best in note and "the checkpoint's classes ['normal', 'covid', 'pneumonia'] differ" in note
               for note in analysis.notes)
    replacement = analysis.best(GRID_DATASET, "resnet50").candidate.trial_id
    assert replacement != best
    assert set(analysis.external.loc[analysis.external["model"] == "resnet50", "trial_id"]) == {replacement}


def test_label_map_from_a_yaml_file(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("No finding: No Finding\nCOVID: COVID-19\n")
    assert parse_label_map([str(path), "Normal=No Finding"]) == {
        "No finding": "No Finding", "COVID": "COVID-19", "Normal": "No Finding"}
    with pytest.raises(CxrError, match=r"--label-map .*missing.yaml: cannot read it"):
        parse_label_map([str(tmp_path / "missing.yaml")])
    answers = tmp_path / "answers.yaml"  # a yes/no covid column: YAML 1.1 would read both as booleans
    answers.write_text("no: No Finding\nyes: COVID-19\nOn: Other pneumonia\n")
    assert parse_label_map([str(answers)]) == {"no": "No Finding", "yes": "COVID-19", "On": "Other pneumonia"}


def test_a_label_mapped_twice_or_a_label_map_not_in_utf8_is_refused(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("COVID: COVID-19\nNormal: No Finding\nCOVID: Other pneumonia\n")
    with pytest.raises(CxrError, match=r"twice.yaml \(line 1\) maps 'COVID' to 'COVID-19' and --label-map "
                                       r".*twice.yaml \(line 3\) to 'Other pneumonia': keep the one meant"):
        parse_label_map([str(twice)])
    with pytest.raises(CxrError, match=r"--label-map 'Normal=No Finding' maps 'Normal' to 'No Finding' and "
                                       r"--label-map 'Normal=COVID-19' to 'COVID-19'"):
        parse_label_map(["Normal=No Finding", "Normal=COVID-19"])
    assert parse_label_map(["Normal=No Finding", "Normal=No Finding"]) == {"Normal": "No Finding"}
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("Neumonía: Other pneumonia\n".encode("latin-1"))
    with pytest.raises(CxrError, match=r"--label-map .*latin.yaml: not UTF-8 \(byte 0xed\); save it as UTF-8"):
        parse_label_map([str(latin)])
    nested = tmp_path / "nested.yaml"
    nested.write_text("COVID: [COVID-19]\n")
    with pytest.raises(CxrError, match="holds no mapping"):
        parse_label_map([str(nested)])


# ------------------------------------------------------------------ held-out sources


@pytest.fixture(scope="module")
def heldout_study(ray_session, tmp_path_factory, sample_subset) -> Path:
    """One ResNet50 trial of 2 epochs on part of the embedded sample, radiopaedia.org held out."""
    from study.driver import run_study
    from study.run import build_parser, settings_from_args

    work = tmp_path_factory.mktemp("heldout-study")
    data = sample_subset(work / "data", per_class=30)
    space = work / "one.yaml"
    space.write_text("search:\n  model: {value: resnet50}\n  optimizer: {value: adam}\n  lr: {value: 1.0e-3}\n"
                     "  batch_size: {value: 16}\n  pretrained: {value: false}\n")
    settings = settings_from_args(build_parser().parse_args([
        "--space", str(space), "--dataset", GRID_DATASET, "--data-root", str(data), "--num-samples", "1",
        "--max-epochs", "2", "--image-size", "32", "--storage", str(work / "studies"), "--name", "heldout",
        "--cache-dir", str(work / "cache"), "--dataset-option", "holdout_sources=radiopaedia.org"]))
    run_study(settings)
    return work / "studies" / "heldout"


def test_held_out_sources_are_evaluated_beside_the_internal_test(heldout_study, tmp_path):
    import pandas as pd

    split = pd.read_csv(heldout_study / "splits" / f"{GRID_DATASET}.csv")
    held = int((split["split"] == "heldout").sum())
    assert held > 0
    analysis = analyze(heldout_study, out=tmp_path / "report", resamples=200, importance="none")
    [external] = analysis.external_sets
    assert external.name == HELDOUT_SET and len(external.y_true) == held
    assert "radiopaedia.org" in external.description
    rows = analysis.external[analysis.external["model"] == "resnet50"].set_index(["metric", "class"])
    assert rows.loc[("accuracy", ALL_PRESENT), "external_images"] == held
    report = (tmp_path / "report" / "report.md").read_text()
    assert "resnet50 on held-out sources: accuracy" in report
    assert [row.name for row in analysis.saliency[0].rows] == ["internal test", HELDOUT_SET]


def test_a_multi_label_study_says_why_it_has_no_evaluation_elsewhere_and_no_grad_cam():
    """Both skip multi-label cells: the report's sections vanished without a word."""
    from study.analysis.external import evaluate_elsewhere
    from study.analysis.saliency import saliency_panels

    settings = types.SimpleNamespace(seed=0, dataset_options={"covid-chestxray": {"holdout_sources": ["a.org"]}})
    chosen = types.SimpleNamespace(rank=1, dataset="covid-chestxray", model="resnet50",
                                   evaluation=types.SimpleNamespace(multilabel=True))
    analysis = types.SimpleNamespace(study=types.SimpleNamespace(settings=settings), selected=[chosen], notes=[],
                                     external_sets=[])
    assert evaluate_elsewhere(analysis, None, [], {}, {}, 0).empty
    assert saliency_panels(analysis, None, 2) == []
    assert analysis.notes == [
        "covid-chestxray: evaluation elsewhere (--external, held-out sources) scores single-label studies; "
        "covid-chestxray is multi-label, not evaluated there",
        "covid-chestxray: no Grad-CAM figures (they show the predicted class of a single-label study; "
        "covid-chestxray is multi-label)"]
