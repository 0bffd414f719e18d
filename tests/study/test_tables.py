"""study.tables: the Markdown tables `study.run` prints."""

import numpy as np
import pandas as pd

from study.tables import (COMPLETED, DIVERGED, ablation_table, best_epochs, best_trials, bin_values, comparison_table,
                          diverged_cells, improves, interval_text, markdown_table, trial_table)

NO_EVENTS = pd.DataFrame(columns=["trial_id", "event", "timestamp", "error_file"])


def test_small_hyperparameters_keep_their_digits():
    """3 decimals would print a weight decay of 1e-4 as 0.000 and lose learning rates below 5e-4."""
    table = pd.DataFrame({"optimizer": ["sgd", "adam"], "lr": [1.5e-3, 3.4e-5], "weight_decay": [1e-4, None],
                          "val/f1_macro": [0.29684, 0.5]})
    lines = markdown_table(table).splitlines()
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == ["sgd", "1.5e-03", "1.0e-04", "0.297"]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == ["adam", "3.4e-05", "", "0.500"]


def test_a_difference_bound_near_zero_shows_its_sign():
    """A paired difference called distinguishable must not print a bound of +0.00."""
    assert interval_text(0.0021, 0.30, signed=True) == "[+0.002, +0.30]"
    assert interval_text(-0.19, -0.00004, signed=True) == "[-0.19, -0.00004]"
    assert interval_text(0.0, 0.3, signed=True) == "[+0.00, +0.30]"
    assert interval_text(0.0021, 0.30) == "[0.00, 0.30]"  # a figure's interval, not a difference
    assert interval_text(float("nan"), 0.3) == "[undefined]"


def test_of_tied_trials_the_best_is_the_lower_trial_id_as_the_analysis_selects():
    """Cells of trials at the constant prediction tie: study.run's table and study.confirm must name the
    trial study.analyze evaluates, not whichever reported first."""
    results = pd.DataFrame({"trial_id": ["d4c1e2f0", "d4c1e2f0", "1a2b3c4d", "1a2b3c4d"],
                            "training_iteration": [1, 2, 1, 2], "config/model": ["alexnet"] * 4,
                            "val/f1_macro": [0.20, 0.284, 0.284, 0.10]})
    assert best_trials(results, "val/f1_macro", "max", ("config/model",))["trial_id"].tolist() == ["1a2b3c4d"]
    assert best_trials(results.assign(**{"val/f1_macro": [0.3, 0.1, 0.1, 0.3]}), "val/f1_macro", "min",
                       ("config/model",))["trial_id"].tolist() == ["1a2b3c4d"]


def test_a_label_with_a_pipe_or_a_line_break_keeps_its_row_whole():
    """A class named like NIH's `Effusion|Infiltration` split the header into more cells than the delimiter row
    has, and GitHub rendered no table."""
    table = pd.DataFrame({"true class": ["Effusion|Infiltration", "No\nFinding"], "Effusion|Infiltration": [3, 1]})
    lines = markdown_table(table).splitlines()
    assert len(lines) == 4
    assert all(line.count("|") - line.count("\\|") == 3 for line in lines), lines
    assert "Effusion\\|Infiltration" in lines[0] and "No Finding" in lines[3]


def diverging_study(placeholder: float = 0.0) -> pd.DataFrame:
    """alexnet: both trials diverged in their first epoch, which reports `placeholder` (study.trainable's worst
    value of the metric); vgg11: one trial measured, one diverged in epoch 2 after its best in epoch 1."""
    return pd.DataFrame({"trial_id": ["a1", "a2", "v1", "v2", "v2"], "trial_name": ["a1", "a2", "v1", "v2", "v2"],
                         "training_iteration": [1, 1, 1, 1, 2], "epoch": [1, 1, 1, 1, 2],
                         "config/model": ["alexnet", "alexnet", "vgg11", "vgg11", "vgg11"],
                         "val/metric": [placeholder, placeholder, 0.3, 0.2, placeholder],
                         "diverged": [1, 1, 0, 0, 1]})


def test_a_diverged_epoch_is_no_measurement_and_a_cell_whose_trials_all_diverged_has_no_best():
    """study.run's table showed alexnet's diverged trial as its best, at 0.000."""
    for mode, placeholder in (("max", 0.0), ("min", float("inf"))):
        results = diverging_study(placeholder)
        table = comparison_table(results, "val/metric", mode, by=("config/model",))
        assert table["model"].tolist() == ["vgg11"], mode
        assert diverged_cells(results, "val/metric", ("config/model",)) == [
            "alexnet: all 2 trials diverged (NaN loss) at epoch 1, before measuring val/metric: no best"]
        trials = trial_table(results, NO_EVENTS, "val/metric", mode, max_epochs=2).set_index("trial_id")
        assert trials.loc[["a1", "a2"], "status"].tolist() == [DIVERGED, DIVERGED]
        assert trials.loc[["a1", "a2"], "best_epoch"].isna().all()
        assert trials.loc[["a1", "a2"], "val/metric"].isna().all()
        assert (trials.loc["v2", "status"], trials.loc["v2", "best_epoch"]) == (DIVERGED, 1)
        assert trials.loc["v2", "val/metric"] == 0.2


def test_the_best_trials_table_shows_every_key_the_space_searches():
    """Two SGD trials differing only in a searched momentum: the table hid the winner's momentum."""
    results = pd.DataFrame({"trial_id": ["a", "b"], "trial_name": ["n", "n"], "training_iteration": [1, 1],
                            "config/model": "alexnet", "config/optimizer": "sgd", "config/lr": 0.01,
                            "config/batch_size": 16, "config/momentum": [0.5, 0.9], "config/weight_decay": 1e-4,
                            "val/f1_macro": [0.3, 0.4]})
    table = comparison_table(results, "val/f1_macro", "max", ("config/model",), searched=("model", "momentum"))
    assert list(table.columns) == ["model", "trial_name", "epoch", "optimizer", "lr", "batch_size", "momentum",
                                   "val/f1_macro"]
    assert table["momentum"].tolist() == [0.9]
    assert "momentum" not in comparison_table(results, "val/f1_macro", "max", ("config/model",)).columns


def tied_study() -> pd.DataFrame:
    """Two alexnet trials on the constant prediction (0.279 in both epochs): ffff's validation loss is lower."""
    return pd.DataFrame({"trial_id": ["0aaa", "0aaa", "ffff", "ffff"], "trial_name": ["a", "a", "b", "b"],
                         "training_iteration": [1, 2, 1, 2], "epoch": [1, 2, 1, 2], "config/model": "alexnet",
                         "val/f1_macro": [0.279] * 4, "val/loss": [1.30, 1.29, 1.05, 0.80],
                         "val/roc_auc_macro": [0.48, 0.50, 0.71, 0.83]})


def test_trials_tied_on_the_metric_are_ranked_by_the_tie_break_at_their_best_epoch():
    """As the study's ASHA ranks them: the trial with the lower validation loss, not the lower (random) trial id;
    at its epoch of the lowest loss among those at the best value, the one whose weights the trial keeps."""
    results = tied_study()
    best = best_trials(results, "val/f1_macro", "max", ("config/model",), tie_break="val/loss")
    assert best[["trial_id", "epoch"]].values.tolist() == [["ffff", 2]]
    table = comparison_table(results, "val/f1_macro", "max", ("config/model",), tie_break="val/loss")
    assert table["trial_name"].tolist() == ["b"]
    assert best_trials(results, "val/f1_macro", "max", ("config/model",),
                       tie_break="val/roc_auc_macro")["trial_id"].tolist() == ["ffff"]  # higher is better there
    assert best_trials(results, "val/f1_macro", "max", ("config/model",))["trial_id"].tolist() == ["0aaa"]
    without_loss = results.assign(**{"val/loss": [1.30, 1.29, None, None]})  # a trial without it ranks after
    assert best_trials(without_loss, "val/f1_macro", "max", ("config/model",),
                       tie_break="val/loss")["trial_id"].tolist() == ["0aaa"]


def test_of_epochs_tied_on_the_metric_the_best_is_the_one_of_the_better_tie_break():
    """A network on the constant prediction scores 0.279 for three epochs while its validation loss falls: its best
    epoch is the third, the epoch ASHA ranked it by and whose weights it keeps (study.checkpoints), not the first.
    An epoch without the tie-break metric comes after one with it; without a tie-break, the first tied epoch."""
    results = pd.DataFrame({"trial_id": "0aaa", "trial_name": "a", "training_iteration": [1, 2, 3, 4],
                            "epoch": [1, 2, 3, 4], "config/model": "alexnet",
                            "val/f1_macro": [0.279, 0.279, 0.279, 0.25], "val/loss": [1.30, None, 0.90, 0.80],
                            "val/roc_auc_macro": [0.71, 0.60, 0.50, 0.90]})

    def best_epoch(tie_break):
        return best_epochs(results, "val/f1_macro", "max", tie_break)["epoch"].tolist()

    assert best_epoch("val/loss") == [3]
    assert best_epoch("val/roc_auc_macro") == [1]  # higher is better there
    assert best_epoch(None) == [1]
    trials = trial_table(results, NO_EVENTS, "val/f1_macro", "max", max_epochs=4, tie_break="val/loss")
    assert trials["best_epoch"].tolist() == [3]
    untied = results.assign(**{"val/loss": [None, None, 0.90, 0.80]})  # the later epoch has it, the first not
    assert best_epochs(untied, "val/f1_macro", "max", "val/loss")["epoch"].tolist() == [3]


def test_an_epoch_improves_on_the_best_by_the_metric_then_by_the_tie_break():
    """The rule of a trial's best epoch (the trainable's weights, the tables, --keep): strictly better on the
    metric, or tied there and strictly better on the tie-break metric; NaN never improves."""
    nan = float("nan")
    assert improves(0.5, None, "max") and improves(0.6, 0.5, "max") and not improves(0.5, 0.5, "max")
    assert improves(0.4, 0.5, "min") and not improves(0.6, 0.5, "min")
    assert not improves(nan, None, "max") and not improves(None, 0.1, "max")
    assert improves(0.5, 0.5, "max", 0.8, 1.0, "val/loss") and not improves(0.5, 0.5, "max", 1.0, 1.0, "val/loss")
    assert not improves(0.5, 0.5, "max", 1.2, 1.0, "val/loss") and not improves(0.4, 0.5, "max", 0.1, 1.0, "val/loss")
    assert improves(0.5, 0.5, "max", 0.9, 0.8, "val/roc_auc_macro")  # higher is better there
    assert improves(0.5, 0.5, "max", 1.2, None, "val/loss") and improves(0.5, 0.5, "max", 1.2, nan, "val/loss")
    assert not improves(0.5, 0.5, "max", None, 1.0, "val/loss") and not improves(0.5, 0.5, "max", nan, None, "val/loss")
    assert not improves(0.5, 0.5, "max", 0.8, 1.0)  # no tie-break: the first of tied epochs stays


def test_bins_of_a_narrow_range_are_told_apart_and_count_each_trial_once():
    """A momentum searched over 0.999–0.9999 got bin edges that all printed 0.999 or 1: two rows of the same
    label, each counting the trials of both, so the trials column summed to more trials than ran."""
    values = pd.Series(np.linspace(0.999, 0.9999, 8))
    labels, order = bin_values(values, "linear")
    assert order == ["[0.999, 0.9992)", "[0.9992, 0.9994)", "[0.9994, 0.9997)", "[0.9997, 0.9999]"]
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(8)], "config/momentum": values,
                           "val/f1_macro": np.linspace(0.2, 0.5, 8), "status": COMPLETED, "epochs_run": 2})
    table = ablation_table(trials, "momentum", "val/f1_macro", "max", "linear")
    assert table["momentum"].is_unique and table["trials"].tolist() == [2, 2, 2, 2]

    choices = pd.Series([0.999, 0.9991, 0.9991, 0.5])
    labels, order = bin_values(choices, "categorical")
    assert order == ["0.5", "0.999", "0.9991"] and labels.tolist() == ["0.999", "0.9991", "0.9991", "0.5"]
    assert bin_values(pd.Series([0.25, 0.5, 16.0]), "categorical")[1] == ["0.25", "0.5", "16"]  # 3 digits will do


def test_a_metric_column_keeps_its_decimals_and_a_small_value_its_digits():
    """A column of F1 scores printed 1 beside 0.950, and 0.0004 as 0.000; a count stays an integer."""
    table = pd.DataFrame({"f1": [1.0, 0.95, 0.0004, -0.00004, 0.0, 2.5e6, None], "n": [3, 4, 5, 6, 7, 8, 9],
                          "best_epoch": pd.array([1, None, 2, 3, 4, 5, 6], dtype="Int64")})
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown_table(table).splitlines()[2:]]
    assert [row[0] for row in rows] == ["1.000", "0.950", "0.0004", "-4e-05", "0.000", "2.5e+06", ""]
    assert [row[1] for row in rows] == ["3", "4", "5", "6", "7", "8", "9"]
    assert [row[2] for row in rows] == ["1", "", "2", "3", "4", "5", "6"]
