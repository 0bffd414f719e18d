"""study.tables: the Markdown tables `study.run` prints."""

import pandas as pd

from study.tables import markdown_table


def test_small_hyperparameters_keep_their_digits():
    """3 decimals would print a weight decay of 1e-4 as 0.000 and lose learning rates below 5e-4."""
    table = pd.DataFrame({"optimizer": ["sgd", "adam"], "lr": [1.5e-3, 3.4e-5], "weight_decay": [1e-4, None],
                          "val/f1_macro": [0.29684, 0.5]})
    lines = markdown_table(table).splitlines()
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == ["sgd", "1.5e-03", "1.0e-04", "0.297"]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == ["adam", "3.4e-05", "", "0.500"]
