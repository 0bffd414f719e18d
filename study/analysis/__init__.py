"""The analysis of a study, in the order the report follows (`python -m study.analyze` is its command):

- `reading`: open a study (settings, results, trial ends, best-weights sidecars);
- `selection`: per (dataset, model), rank trials on validation and evaluate the best on test;
- `evaluation`: the study's split, checked, and one checkpoint scored on it;
- `uncertainty`: the patient bootstrap: intervals and paired differences;
- `confirmation`: the seed repeats of `python -m study.confirm`, evaluated;
- `importance`: which hyperparameters mattered (Optuna's evaluators);
- `report_tables`, `figures`, `report`: the tables, the figures and report.md.
"""
