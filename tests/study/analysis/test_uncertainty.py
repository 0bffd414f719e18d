"""The patient bootstrap: exact point estimates, known interval widths, paired differences, strata."""

from __future__ import annotations

import types

import numpy as np
import pytest

from cxrnets.metrics import classification_metrics, per_class_table
from study.analysis.uncertainty import (BASELINE, bootstrap_split, group_strata, metric_samples,
                                        percentile_interval, proportion_interval, resample_weights,
                                        same_in_every_resample, undefined_reasons)


def synthetic(multilabel: bool, images: int = 240, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    if multilabel:
        y_true = (rng.random((images, classes)) < 0.3).astype(int)
        scores = np.clip(0.4 * y_true + 0.6 * rng.random((images, classes)), 0, 1)
        scores[:7] = 0.5  # ties, which the AUC counts as halves
    else:
        y_true = rng.integers(0, classes, images)
        scores = rng.random((images, classes))
        scores[np.arange(images), y_true] += 0.4
    return y_true, scores, rng.integers(0, 50, images)


@pytest.mark.parametrize("multilabel", [False, True])
def test_weights_of_ones_give_the_metrics_and_a_resample_equals_its_duplicated_images(multilabel):
    y_true, scores, groups = synthetic(multilabel)
    ones = metric_samples(y_true, scores, multilabel, np.ones((1, len(y_true))))
    for name, value in classification_metrics(y_true, scores, multilabel).items():
        assert ones.summary[name][0] == pytest.approx(value, abs=1e-12), name
    per_class = per_class_table(y_true, scores, list("abcd"), multilabel)
    for column in ("precision", "recall", "specificity", "f1", "roc_auc"):
        np.testing.assert_allclose(ones.per_class[column][0], per_class[column].to_numpy())

    weights = resample_weights(groups, group_strata(groups, y_true, multilabel), 50, seed=3)
    samples = metric_samples(y_true, scores, multilabel, weights)
    for b in (0, 17, 49):
        drawn = np.repeat(np.arange(len(y_true)), weights[b].astype(int))
        for name, value in classification_metrics(y_true[drawn], scores[drawn], multilabel).items():
            assert samples.summary[name][b] == pytest.approx(value, abs=1e-9), (name, b)


@pytest.mark.parametrize("multilabel", [False, True])
def test_a_class_on_every_image_has_no_specificity_in_any_resample(multilabel):
    """As in cxrnets.metrics.per_class_table: 0/0 is no measurement, not a specificity of 0."""
    y_true = np.array([[1, 0], [1, 1], [1, 0]]) if multilabel else np.array([0, 0, 0])
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.4, 0.6]])
    samples = metric_samples(y_true, scores, multilabel, np.array([[1, 1, 1], [2, 1, 0]]))
    assert np.isnan(samples.per_class["specificity"][:, 0]).all()


def test_resampling_patients_gives_the_width_that_resampling_images_understates():
    """20 patients of 10 images each; a patient's images are all right or all wrong (10 and 10).
    Accuracy 0.5 over 20 independent units: standard error sqrt(0.25 / 20) = 0.112, a 95% interval
    about 0.44 wide. Treating the 200 images as independent gives sqrt(0.25 / 200) = 0.035: 0.14 wide."""
    patients = np.repeat(np.arange(20), 10)
    y_true = np.repeat(np.arange(20) % 2, 10)             # 10 patients per class
    right = np.repeat((np.arange(20) // 2) % 2 == 0, 10)  # 5 right, 5 wrong patients in each class
    predicted = np.where(right, y_true, 1 - y_true)
    scores = np.eye(2)[predicted]

    def width(groups):
        weights = resample_weights(groups, group_strata(groups, y_true, False), 4000, seed=0)
        accuracy = metric_samples(y_true, scores, False, weights).summary["accuracy"]
        assert np.mean(accuracy) == pytest.approx(0.5, abs=0.01)
        lower, upper = percentile_interval(accuracy)
        return upper - lower

    assert 0.36 <= width(patients) <= 0.52
    assert width(np.arange(200)) <= 0.18


def evaluation(trial_id, y_true, scores, groups, baseline_class=0, classes=("a", "b")):
    baseline = np.zeros_like(scores, dtype=float)
    baseline[:, baseline_class] = 1.0
    return types.SimpleNamespace(trial_id=trial_id, y_true=y_true, scores=scores, groups=groups, multilabel=False,
                                 classes=list(classes), baseline_scores=baseline)


def test_paired_differences_have_the_known_sign_and_cancel_what_the_models_share():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 3)
    y_true = np.repeat(np.arange(40) % 2, 3)
    perfect = np.eye(2)[y_true]
    # `worse` misses every image of 8 patients; `almost` misses one patient that `perfect` gets right.
    worse_patients = rng.choice(40, 8, replace=False)
    worse = np.eye(2)[np.where(np.isin(patients, worse_patients), 1 - y_true, y_true)]
    almost = np.eye(2)[np.where(patients == 5, 1 - y_true, y_true)]
    split = bootstrap_split("d", [evaluation("perfect", y_true, perfect, patients),
                                  evaluation("worse", y_true, worse, patients),
                                  evaluation("almost", y_true, almost, patients)], resamples=2000, seed=1)
    difference = split.cell(["perfect"], "accuracy") - split.cell(["worse"], "accuracy")
    lower, upper = percentile_interval(difference)
    assert 0 < lower < 0.2 < upper  # +0.2 exactly on the split; distinguishable from zero
    lower, upper = percentile_interval(split.cell(["perfect"], "accuracy") - split.cell(["almost"], "accuracy"))
    assert lower == 0 and upper > 0  # one patient apart: not distinguishable
    # Against the majority baseline (always class 0: accuracy 0.5), the perfect model is clearly better.
    lower, _ = percentile_interval(split.cell(["perfect"], "accuracy") - split.samples[BASELINE].summary["accuracy"])
    assert lower > 0.3
    # Paired: the same resamples on both sides. Unpaired, the spread of the difference would be wider.
    assert np.std(difference) < np.std(split.cell(["perfect"], "f1_macro") - np.roll(split.cell(["worse"], "f1_macro"), 1))


def test_strata_keep_a_rare_class_in_every_resample_and_seeds_repeat():
    y_true = np.array([0] * 60 + [1] * 2)        # 2 images of the rare class, one patient each
    groups = np.r_[np.repeat(np.arange(20), 3), [20, 21]]
    strata = group_strata(groups, y_true, False)
    weights = resample_weights(groups, strata, 500, seed=7)
    assert (weights[:, y_true == 1].sum(axis=1) == 2).all()
    assert (weights.sum(axis=1) == len(y_true)).all()  # every resample draws as many patients (here images)
    np.testing.assert_array_equal(weights, resample_weights(groups, strata, 500, seed=7))
    assert not np.array_equal(weights, resample_weights(groups, strata, 500, seed=8))


def class_of_shared_patients():
    """As strata_vanish.py: 12 patients of COVID-19 images only, 2 patients with 2 COVID-19 images and 1 No Finding
    each (No Finding's only patients), 4 of Other pneumonia."""
    y_true = np.r_[np.zeros(12, int), [0, 0, 2, 0, 0, 2], np.ones(4, int)]
    groups = np.r_[np.arange(12), [12, 12, 12, 13, 13, 13], np.arange(14, 18)]
    return y_true, groups


def class_whose_patients_all_hold_rarer_classes():
    """Class 1 (6 images) has 2 patients, one also holding class 2, the other class 3; classes 2 and 3 (2 images
    each) have 2 patients: whichever of a patient's classes is the stratum, class 1 has none of its own."""
    y_true = np.r_[np.zeros(10, int), [1, 1, 1, 2], [1, 1, 1, 3], [2], [3]]
    groups = np.r_[np.arange(10), [10] * 4, [11] * 4, [12], [13]]
    return y_true, groups


def class_whose_patients_hold_classes_of_one_patient():
    """Class 1's 2 patients each hold a class of one patient (2 and 3); class 4 is a third lone patient."""
    y_true = np.r_[np.zeros(10, int), [1, 1, 2], [1, 3], [4]]
    groups = np.r_[np.arange(10), [10] * 3, [11] * 2, [12]]
    return y_true, groups


def test_a_class_of_two_patients_keeps_its_own_stratum_beside_classes_of_one_patient():
    """Classes of one patient are resampled in the shared stratum of lone patients: were they the rarest, class 1's
    patients would go there with them and class 1 could fall out of a resample."""
    y_true, groups = class_whose_patients_hold_classes_of_one_patient()
    strata = group_strata(groups, y_true, False)
    assert (strata[groups == 10] == 1).all() and (strata[groups == 11] == 1).all()
    assert (strata[groups == 12] == 0).all()  # the one lone patient left joins the largest stratum


@pytest.mark.parametrize("split", [class_of_shared_patients, class_whose_patients_all_hold_rarer_classes,
                                   class_whose_patients_hold_classes_of_one_patient])
@pytest.mark.parametrize("multilabel", [False, True])
def test_every_class_of_two_patients_or_more_is_in_every_resample(split, multilabel):
    """A perfect model's recall of each class is 1 on the split; a resample without a class would count that
    class's recall as 0 and pull the macro recall's interval below 1. Classes of one patient are resampled too
    (their averages have no interval)."""
    y_true, groups = split()
    classes = y_true.max() + 1
    truth = np.eye(classes, dtype=int)[y_true] if multilabel else y_true
    strata = group_strata(groups, truth, multilabel)
    weights = resample_weights(groups, strata, 2000, seed=0, members=np.eye(classes, dtype=bool)[y_true])
    present = weights @ np.eye(classes)[y_true] > 0
    patients = np.array([len(set(groups[y_true == k])) for k in range(classes)])
    assert present[:, patients >= 2].all()
    perfect = np.eye(classes)[y_true] * 0.9 + 0.1 / classes
    recall = metric_samples(truth, perfect, multilabel, weights).per_class["recall"]
    assert (recall[:, patients >= 2] == 1).all()
    # The groups are resampled all the same: class 0's patients each drawn a varying number of times.
    assert np.ptp(weights[:, 0]) > 0


def lone_patient_split():
    """As study r1's test split: 15 patients of class 0, 4 of class 1, and one patient (id 19) with one image of
    class 0 and two of class 2, the only patient of class 2. Two models differ on that patient's class-0 image only."""
    groups = np.r_[np.arange(15), np.arange(15), np.arange(15, 19), 19, 19, 19]
    y_true = np.r_[np.zeros(30, int), np.ones(4, int), [0, 2, 2]]
    both = np.eye(3)[y_true]
    other = both.copy()
    other[34] = np.eye(3)[1]  # the lone patient's class-0 image
    return groups, y_true, both, other


def test_a_patient_alone_in_its_stratum_is_resampled():
    """A stratum of one patient drawn once in every resample would fix that patient's images in every resample:
    a difference made by them alone would look certain. Such patients are resampled with the others."""
    groups, y_true, both, other = lone_patient_split()
    weights = resample_weights(groups, group_strata(groups, y_true, False), 2000, seed=0)
    lone = weights[:, groups == 19][:, 0]
    assert lone.min() == 0 and lone.max() >= 2
    difference = (metric_samples(y_true, other, False, weights).summary["accuracy"]
                  - metric_samples(y_true, both, False, weights).summary["accuracy"])
    lower, upper = percentile_interval(difference)
    assert lower < 0 <= upper  # not distinguishable: one image of one patient
    # Two lone patients (of two classes of one patient each) are resampled between them.
    y_two = np.r_[np.zeros(6, int), [1, 2]]
    groups_two = np.r_[np.arange(6), 6, 7]
    weights = resample_weights(groups_two, group_strata(groups_two, y_two, False), 500, seed=0)
    assert np.ptp(weights[:, 6]) > 0 and np.ptp(weights[:, 7]) > 0
    assert (weights[:, :6].sum(axis=1) == 6).all()  # the strata of two patients or more keep their count


def test_an_absent_class_or_a_single_patient_leaves_intervals_undefined_with_why():
    reasons = undefined_reasons(np.array([0, 0, 1, 1]), ["COVID-19", "Pneumonia", "No Finding"], False,
                                np.array([0, 1, 2, 3]))
    assert set(reasons) == {"precision_macro", "recall_macro", "f1_macro"}
    assert "no image on the split of class No Finding: the macro average" in reasons["f1_macro"]
    assert undefined_reasons(np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], False, np.arange(6)) == {}
    one = undefined_reasons(np.array([0, 1]), ["a", "b"], False, np.array([4, 4]))
    assert "accuracy" in one and "one patient" in one["accuracy"]


def test_the_reasons_name_several_labels_as_labels():
    """Multi-label: two labels of one patient each (rows 0 and 1), a third on no image; read as written."""
    y_true = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    reasons = undefined_reasons(y_true, ["Fungal", "SARS", "COVID-19", "Lipoid"], True, np.array([0, 1, 2, 3]))
    assert reasons["f1_macro"].startswith("no image on the split of label Lipoid: the macro average counts each "
                                          "such label as 0 in every resample; one patient on the split of labels "
                                          "Fungal, SARS: a resample holds that patient's images or none of the "
                                          "label's, so each such label's part of an average over labels is that "
                                          "one patient's figure or 0")


def one_patient_class_split(resamples: int = 500):
    """30 patients of class 0, 8 of class 1, and class 2 as one patient with two images; two models."""
    rng = np.random.default_rng(4)
    groups = np.r_[np.repeat(np.arange(38), 2), [38, 38]]
    y_true = np.r_[np.zeros(60, int), np.ones(16, int), [2, 2]]
    guessed = np.where(rng.random(len(y_true)) < 0.7, y_true, rng.integers(0, 3, len(y_true)))
    return bootstrap_split("d", [evaluation("m", y_true, np.eye(3)[guessed], groups, classes=("a", "b", "c"))],
                           resamples=resamples, seed=0), y_true, groups


def test_a_class_of_one_patient_leaves_the_averages_over_classes_without_interval():
    """A resample holds the lone patient of class c or no image of c: its recall is that patient's or 0, so an
    interval of the macro recall (or F1, precision, ROC AUC, classwise ECE) would spread over nothing but
    whether that one patient was drawn."""
    split, y_true, groups = one_patient_class_split()
    recall = split.samples["m"].per_class["recall"]
    assert set(np.unique(recall[:, 2])) == {0.0, 0.5} and len(np.unique(recall[:, 1])) > 2  # 1 of its 2 images
    assert split.class_patients == {"a": 30, "b": 8, "c": 1}
    assert set(split.undefined) == {"precision_macro", "recall_macro", "f1_macro", "roc_auc_macro", "classwise_ece"}
    assert "one patient on the split of class c: a resample holds" in split.undefined["f1_macro"]
    assert not split.class_resampled(2) and split.class_resampled(1)
    assert not split.difference_defined("f1_macro") and split.difference_defined("accuracy")
    assert split.few_patients() == {"b": 8}
    # Two patients of class c: resampled, defined, and named among the few.
    two = undefined_reasons(y_true, ["a", "b", "c"], False, np.where(np.arange(len(y_true)) == 77, 99, groups))
    assert two == {}


def test_a_class_absent_from_the_split_keeps_paired_differences():
    """An absent class adds the same 0 to both sides of a difference: the difference keeps its interval."""
    y_true = np.repeat([0, 1], 20)
    split = bootstrap_split("d", [evaluation("m", y_true, np.eye(3)[y_true], np.arange(40), classes=("a", "b", "c"))],
                            resamples=200)
    assert "f1_macro" in split.undefined and split.difference_defined("f1_macro")


def test_the_bootstrap_of_an_average_over_classes_covers_too_rarely_with_few_patients_in_a_class():
    """Seeded simulation behind the report's few-patients warning: 3 classes of 20, 6 and 3 patients
    (1-3 correlated images each); the model right with a patient-own probability. The patient
    bootstrap's 95% interval of the macro recall misses the true value more often than 1 time in 12."""
    rng = np.random.default_rng(0)
    patients, truth = (20, 6, 3), np.array([0.8, 0.65, 0.6])
    replicates, covered = 150, 0
    for _ in range(replicates):
        y_true, right, groups = [], [], []
        for k, count in enumerate(patients):
            for _patient in range(count):
                images = int(rng.integers(1, 4))
                own = rng.beta(truth[k] * 4, (1 - truth[k]) * 4)
                y_true += [k] * images
                right += list(rng.random(images) < own)
                groups += [len(set(groups))] * images
        y_true, groups = np.array(y_true), np.array(groups)
        guessed = np.where(right, y_true, (y_true + 1) % 3)
        weights = resample_weights(groups, group_strata(groups, y_true, False), 300, int(rng.integers(1 << 30)))
        lower, upper = percentile_interval(metric_samples(y_true, np.eye(3)[guessed], False, weights)
                                           .summary["recall_macro"])
        covered += lower <= truth.mean() <= upper
    assert covered / replicates < 0.92


def test_evaluations_of_different_images_are_refused():
    y_true = np.array([0, 1, 0, 1])
    first = evaluation("a", y_true, np.eye(2)[y_true], np.arange(4))
    other = evaluation("b", y_true[::-1].copy(), np.eye(2)[y_true], np.arange(4))
    with pytest.raises(ValueError, match="evaluated on different images"):
        bootstrap_split("d", [first, other], resamples=200)


@pytest.mark.parametrize("patients", [1, 2, 5, 30])
def test_a_proportion_at_0_or_1_gets_the_exact_binomial_interval_over_its_patients(patients):
    from scipy.stats import binomtest

    groups = np.repeat(np.arange(patients), 3)  # 3 images each: the patients are the units
    for right in (0, patients):
        exact = binomtest(right, patients).proportion_ci(0.95, method="exact")
        correct = np.full(len(groups), right == patients)
        assert proportion_interval(correct, groups) == pytest.approx((exact.low, exact.high), abs=1e-12)
    assert proportion_interval([True, True], ["a", "b"])[0] == pytest.approx(0.158, abs=1e-3)  # 2 of 2: above 0.16
    assert all(np.isnan(proportion_interval([], [])))


def test_a_proportion_over_independent_images_is_close_to_the_exact_binomial_interval():
    """One image per patient: no clustering, and with many patients Korn-Graubard's interval is
    Clopper-Pearson's (its variance's m/(m-1) costs one image of effective size)."""
    from scipy.stats import binomtest

    correct = np.r_[np.ones(80, bool), np.zeros(20, bool)]
    exact = binomtest(80, 100).proportion_ci(0.95, method="exact")
    assert proportion_interval(correct, np.arange(100)) == pytest.approx((exact.low, exact.high), abs=2e-3)


def test_images_of_one_patient_count_for_less_than_independent_images():
    """8 of 9 images right: over 9 patients, or over 4 patients of 2-3 images with the miss among them."""
    correct = np.r_[np.ones(8, bool), False]
    independent = proportion_interval(correct, np.arange(9))
    clustered = proportion_interval(correct, np.array([0, 0, 1, 1, 2, 2, 3, 3, 3]))
    assert clustered[0] < independent[0] < 0.52 and clustered[1] > 0.99
    # The patients resampled claim far more: [0.73, 1.00]
    weights = resample_weights(np.array([0, 0, 1, 1, 2, 2, 3, 3, 3]), np.zeros(9), 2000, 0)
    assert percentile_interval((weights @ correct) / weights.sum(axis=1))[0] > 0.7


def test_the_proportion_interval_covers_where_the_patient_bootstrap_does_not():
    """Seeded simulation of what a small test split gives a class: 8 patients of 1-4 images, each patient
    right with their own probability (mean 0.7, intra-patient correlation 0.3). The resampled patients'
    percentile interval misses the true recall more often than 1 time in 20; the exact clustered one
    does not."""
    rng = np.random.default_rng(0)
    truth, replicates, covered_exact, covered_bootstrap = 0.7, 300, 0, 0
    for _ in range(replicates):
        images = rng.integers(1, 5, 8)
        own = rng.beta(truth * 7 / 3, (1 - truth) * 7 / 3, 8)
        hits = rng.binomial(images, own)
        groups = np.repeat(np.arange(8), images)
        correct = np.concatenate([np.arange(n) < h for n, h in zip(images, hits)])
        lower, upper = proportion_interval(correct, groups)
        covered_exact += lower <= truth <= upper
        weights = resample_weights(groups, np.zeros(len(groups)), 400, int(rng.integers(1 << 30)))
        lower, upper = percentile_interval((weights @ correct) / weights.sum(axis=1))
        covered_bootstrap += lower <= truth <= upper
    assert covered_exact / replicates >= 0.95
    assert covered_bootstrap / replicates < 0.93


def test_the_difference_of_independent_proportions_combines_their_intervals():
    from study.analysis.uncertainty import independent_difference_interval

    # symmetric intervals of half-widths 0.3 and 0.4: the difference +- 0.5
    assert independent_difference_interval(0.5, (0.2, 0.8), 0.6, (0.2, 1.0)) == pytest.approx((-0.6, 0.4))
    # 0 of 3 patients against 4 of 4: the difference -1, its interval reaching as far as either side allows
    none, every = proportion_interval(np.zeros(3, bool), np.arange(3)), proportion_interval(np.ones(4, bool), np.arange(4))
    low, high = independent_difference_interval(0.0, none, 1.0, every)
    assert low == pytest.approx(-1.0) and -1.0 < high < 0
    assert high == pytest.approx(np.hypot(none[1], 1 - every[0]) - 1)


def label_on_every_patient_but_one(resamples: int = 500):
    """As the covid-chestxray study's test split: Pneumonia on every image but those of one patient (19), COVID-19
    on patients 0-9; 20 patients of two images each."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(20), 2)
    y_true = np.stack([groups != 19, groups < 10], axis=1).astype(int)
    scores = np.clip(0.3 * y_true + 0.7 * rng.random(y_true.shape), 0, 1)
    baseline = np.tile([1.0, 0.0], (len(groups), 1))
    single = types.SimpleNamespace(trial_id="m", y_true=y_true, scores=scores, groups=groups, multilabel=True,
                                   classes=["Pneumonia", "COVID-19"], baseline_scores=baseline)
    return bootstrap_split("d", [single], resamples=resamples, seed=0)


def test_a_label_whose_rest_is_one_patient_has_no_roc_auc_interval():
    """A resample without patient 19 has no image lacking Pneumonia: Pneumonia's ROC AUC is undefined there. Its
    interval is not made of the other resamples (it was, silently), nor is the macro ROC AUC's, whose average would
    hold Pneumonia in some resamples and not in others."""
    split = label_on_every_patient_but_one()
    auc = split.samples["m"].per_class["roc_auc"]
    assert 0 < np.isnan(auc[:, 0]).sum() < len(auc)
    assert split.rest_patients == {"Pneumonia": 1, "COVID-19": 10}
    assert split.class_resampled(0) and not split.auc_resampled(0) and split.auc_resampled(1)
    assert percentile_interval(auc[:, 0]) == pytest.approx((np.nan, np.nan), nan_ok=True)
    assert set(split.undefined) == {"roc_auc_macro"}
    assert split.undefined["roc_auc_macro"].startswith("the images not of label Pneumonia are one patient's: a "
                                                       "resample holds that patient's images or none")
    assert not split.difference_defined("roc_auc_macro") and split.difference_defined("f1_macro")


def test_a_figure_undefined_in_some_resamples_has_no_interval():
    """An interval of the resamples where the figure happens to be defined would rest on fewer resamples than it
    says, of other patients than the split's."""
    values = np.r_[np.linspace(0.2, 0.9, 99), np.nan]
    assert percentile_interval(values) == pytest.approx((np.nan, np.nan), nan_ok=True)
    assert percentile_interval(np.linspace(0.2, 0.9, 100)) == pytest.approx((0.2175, 0.8825))
    assert not same_in_every_resample(np.r_[np.full(99, 0.5), np.nan])


def test_the_images_without_a_label_stay_in_every_resample_where_two_patients_hold_them():
    """Two of 20 patients hold the only images without label 0, in label 0's stratum: drawing its 20 patients
    would leave both out of about 12% of resamples, where label 0's ROC AUC is undefined. Such resamples are drawn
    again, as those lacking a class of two patients or more are."""
    groups = np.repeat(np.arange(20), 2)
    y_true = np.stack([~np.isin(np.arange(40), [1, 3]), groups < 10], axis=1).astype(int)
    members = y_true.astype(bool)
    weights = resample_weights(groups, group_strata(groups, y_true, True), 2000, seed=0, members=members)
    assert ((weights @ ~members[:, 0]) > 0).all()
    scores = np.random.default_rng(1).random(y_true.shape)
    auc = metric_samples(y_true, scores, True, weights).per_class["roc_auc"]
    assert np.isfinite(auc).all() and np.isfinite(percentile_interval(auc[:, 0])).all()
