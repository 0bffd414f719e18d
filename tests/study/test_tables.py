"""study.tables: the Markdown tables `study.run` prints."""

import pandas as pd

from study.tables import best_trials, interval_text, markdown_table


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
