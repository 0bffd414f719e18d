"""How often the analysis's patient-bootstrap intervals cover the truth on small test splits.

A seeded simulation behind the README's coverage table (Analysis): test splits of three classes, each
patient with 1-3 images that share the patient's own chance of being classified right (the images of
one patient are correlated), scored with the analysis's own resampling (study.analysis.uncertainty);
the truth is each metric of the population confusion matrix at the split's class mix. Run from the
repository root:

    python tools/interval_coverage.py                 # the README's rows, 300 splits each (about 5 min)
    python tools/interval_coverage.py --splits 100 --patients 36,6,3
"""

from __future__ import annotations

import argparse

import numpy as np

from study.analysis.uncertainty import group_strata, metric_samples, percentile_interval, resample_weights

# P(predicted class | true class): the model every simulated patient is drawn around.
CONFUSION = np.array([[0.80, 0.15, 0.05],
                      [0.25, 0.65, 0.10],
                      [0.20, 0.20, 0.60]])
CONCENTRATION = 4.0  # of each patient's own row around CONFUSION: lower, more alike a patient's images
METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
README_ROWS = ((36, 6, 1), (36, 6, 2), (36, 6, 3), (36, 6, 5), (36, 8, 8), (36, 15, 15))


def population_metrics(share: np.ndarray) -> dict[str, float]:
    """The metrics of CONFUSION at class shares `share`: what a split's figures estimate."""
    confusion = CONFUSION * share[:, None]
    tp, support, guessed = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    return {"accuracy": tp.sum(), "precision_macro": (tp / guessed).mean(), "recall_macro": (tp / support).mean(),
            "f1_macro": (2 * tp / (guessed + support)).mean()}


def simulated_split(patients: tuple[int, ...], rng: np.random.Generator):
    """(true classes, predicted classes, patient of each image) of one test split."""
    truth, predicted, groups = [], [], []
    for k, count in enumerate(patients):
        for _ in range(count):
            own = rng.dirichlet(CONCENTRATION * CONFUSION[k])
            images = int(rng.integers(1, 4))
            truth += [k] * images
            predicted += list(rng.choice(len(CONFUSION), size=images, p=own))
            groups += [len(set(groups))] * images
    return np.array(truth), np.array(predicted), np.array(groups)


def coverage(patients: tuple[int, ...], splits: int, resamples: int, seed: int) -> dict[str, float]:
    """The share of `splits` simulated splits whose 95% interval holds each metric's truth."""
    rng = np.random.default_rng(seed)
    truth = population_metrics(np.array(patients) / sum(patients))
    covered = dict.fromkeys(METRICS, 0)
    for _ in range(splits):
        y_true, predicted, groups = simulated_split(patients, rng)
        scores = np.eye(len(CONFUSION))[predicted]
        weights = resample_weights(groups, group_strata(groups, y_true, False), resamples, int(rng.integers(1 << 30)))
        samples = metric_samples(y_true, scores, False, weights).summary
        for name in METRICS:
            lower, upper = percentile_interval(samples[name])
            covered[name] += lower <= truth[name] <= upper
    return {name: count / splits for name, count in covered.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/interval_coverage.py", description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=300, help="simulated test splits per row (default: 300)")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples per split (default: 500)")
    parser.add_argument("--patients", action="append", default=None,
                        help="patients of each class, comma-separated; repeatable (default: the README's rows)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [tuple(int(n) for n in text.split(",")) for text in args.patients] if args.patients else README_ROWS
    print("patients per class | " + " | ".join(METRICS))
    for patients in rows:
        found = coverage(patients, args.splits, args.resamples, args.seed)
        print(f"{','.join(map(str, patients))} | " + " | ".join(f"{found[name]:.2f}" for name in METRICS), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
