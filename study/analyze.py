"""Analyse a study: the paper's comparison and ablation tables, with intervals, confusion matrices and curves.

    python -m study.analyze studies/demo-20261125-101500
    python -m study.analyze studies/demo-20261125-101500 --top-k 3 --format md,png
    python -m study.analyze studies/demo-20261125-101500 --split val --metric val/accuracy
    python -m study.analyze studies/demo-20261125-101500 --bootstrap 5000 --importance ped-anova
    python -m study.analyze studies/demo-20261125-101500 --external hospital-b=csv:/data/b/labels.csv \
        --dataset-option hospital-b:patient_column=patient --label-map "No finding=No Finding"

It reads what a study wrote (finished, still running or interrupted; it never
trains): the results table, the trial ends, the study's split and the trials'
best-weights sidecars (study.checkpoints). For every (dataset, model) it picks
the best trial on the validation metric, evaluates that trial's best weights
once on the held-out test split, and writes `<study dir>/report/`
(`report-val/` for --split val, so that a look at validation keeps the test
report; or --out): report.md (tables inline, figures linked), one CSV and one
Parquet file per table under tables/, PNG figures under figures/, and
analysis-files.json, the list of them, the split and the study analysed: an
analysis of that study into that folder again replaces those files (saying
on stderr which it deleted and did not write again, and whether the report
it replaced was of the other split), and refuses a folder holding other such
files (a report.md, tables or figures of someone else's, which it would
overwrite) or another study's report. A study in object storage
(s3://, gs://) is read in place; only the weights it evaluates are downloaded,
into a local cache that a second analysis reuses.

Every figure from the evaluated split carries a 95% interval from a bootstrap
over its patients, and the models are compared, paired on the same resampled
patients, with the majority baseline and with the model chosen best on
validation (study.analysis.uncertainty). Optuna's importance evaluators say
which hyperparameters mattered; a `python -m study.confirm` run adds the
spread over new seeds of each selected configuration.

Each cell's best model is also evaluated once on images from elsewhere: the
study's held-out sources (study.run --dataset-option holdout_sources=...)
and every --external set, with what exists when a set lacks classes
(accuracy, each present class's recall and ROC AUC), beside its internal
figures; and Grad-CAM maps show where it looks (study.analysis.external,
study.analysis.saliency).

Only the trials chosen on validation are ever evaluated on test, and each
analysis of the test split records which trials it evaluated there in the
study (analyses/), so that its report says how often, and for which other
trials, the split was read before (study.analysis.looks). A trial
whose weights are missing or unreadable, or not its own (trained with
another config than the results give the trial), is reported and the next
best trial of its cell takes its place; one whose outputs on the test images
are not finite fails its cell, which no other trial fills (that would choose
it by its test figures); one whose weights a running study rewrote since the
analysis ranked it is skipped the same way. A study whose search is
unfinished (trials errored, interrupted or not started) is evaluated on test
only with --allow-unfinished, as study.confirm confirms it: the trials it
chooses may still change; a chosen trial that failed or has not ended is
noted, and its status shown. The split is part of the study: if the
images changed since the study made it (their SHA-1s are in the split file),
or the split file was edited (its SHA-256, which study.json records; for a
study from before that, the analysis remakes the split from the data and the
study's seed and compares), the analysis refuses.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from shlex import quote
from typing import TYPE_CHECKING

from cxrnets.errors import CxrError
from study.analysis.importance import EVALUATORS
from study.analysis.uncertainty import RESAMPLES

if TYPE_CHECKING:
    from study.analysis.external import ExternalSpec
    from study.analysis.importance import Importance
    from study.analysis.selection import Analysis

log = logging.getLogger("study.analyze")

FORMATS = ("md", "csv", "parquet", "png")
REPORT_DIRS = {"test": "report", "val": "report-val"}  # the default --out: a look at validation keeps the test report
MIN_RESAMPLES = 200
SALIENCY_PER_CLASS = 2


def analyze(study_dir: str | Path, metric: str | None = None, split: str = "test", top_k: int = 1,
            formats: tuple[str, ...] = FORMATS, out: str | Path | None = None,
            data_roots: list[str] | None = None, cache_dir: str | None = None,
            device: str = "auto", resamples: int = RESAMPLES, importance: str = "fanova",
            externals: list[ExternalSpec] | None = None, label_map: dict[str, str] | None = None,
            saliency: int = SALIENCY_PER_CLASS, allow_unfinished: bool = False) -> Analysis:
    """Analyse one study and write its report; returns everything it computed. `data_roots` are --data-root
    options ([DATASET=]PATH): where the study's datasets lie on this machine, if not where it read them. A study
    whose search is unfinished is refused on the test split unless `allow_unfinished`."""
    if split not in ("val", "test"):
        raise CxrError(f"--split {split}: choose val or test")
    if top_k < 1:
        raise CxrError(f"--top-k must be at least 1, got {top_k}")
    if resamples != 0 and resamples < MIN_RESAMPLES:
        raise CxrError(f"--bootstrap {resamples}: give at least {MIN_RESAMPLES} resamples (a 95% interval's tails "
                       f"need them; default {RESAMPLES}), or 0 for no intervals")
    if saliency < 0:
        raise CxrError(f"--saliency {saliency}: give the images per class for the Grad-CAM figures, or 0 for none")
    if label_map and not externals:
        raise CxrError("--label-map applies to --external sets, and none is given (the study's own datasets and "
                       "held-out sources keep the study's class names): add --external NAME=DATASET:PATH, or drop "
                       "--label-map")
    if importance not in (*EVALUATORS, "none"):
        raise CxrError(f"--importance {importance}: choose from {', '.join(EVALUATORS)} or none")
    if not formats:
        raise CxrError(f"--format is empty: name what to write, comma-separated from {','.join(FORMATS)}")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise CxrError(f"--format {','.join(sorted(unknown))}: choose from {','.join(FORMATS)}")
    from cxrnets.training import select_device
    from study import storage
    from study.analysis.confirmation import evaluate_confirmation
    from study.analysis.evaluation import StudyData
    from study.analysis.external import check_externals, evaluate_elsewhere
    from study.analysis.looks import Look, earlier_looks, record_look
    from study.analysis.reading import (nothing_to_analyse, open_study, resolve_metric, trial_configs, unknown_configs,
                                        untried)
    from study.analysis.report import check_report_folder, write_report
    from study.analysis.report_tables import build_tables
    from study.analysis.saliency import saliency_panels
    from study.analysis.selection import Analysis, select_and_evaluate
    from study.analysis.uncertainty import bootstrap_split
    from study.settings import parse_data_roots
    from study.tables import search_summary, trial_table, wall_seconds

    if out is not None and storage.is_remote(str(out)):
        raise CxrError(f"--out {out}: the report is written to a local folder, not to object storage; pass a local "
                       "folder (and copy the report to the bucket afterwards if it should be there)")
    select_device(device)  # a --device this machine lacks stops here, not at every trial
    study = open_study(study_dir)
    if study.results.empty:
        raise CxrError(nothing_to_analyse(study))
    metric, mode = resolve_metric(study, metric)
    if study.results[metric].notna().sum() == 0:
        raise CxrError(f"{study.uri}: no finished epoch recorded {metric}; nothing to analyse")
    if split == "test" and not allow_unfinished:
        check_search_finished(study_dir, study.uri)
    settings = study.settings
    trials = trial_table(study.results, study.events, metric, mode, settings.max_epochs,
                         trial_configs(study.uri, study.trial_dirs, study.results), settings.tie_break)
    analysis = Analysis(study, metric, mode, split, top_k, trials, notes=list(study.weights_problems))
    analysis.notes += unknown_configs(trials) + untried(study, trials)
    analysis.summary = search_summary(trials, settings.max_epochs, wall_seconds(study.results, study.events))

    if out is None and study.remote:
        raise CxrError(f"{study.uri} is in object storage: pass --out DIR (a local folder) for the report")
    analysis.out = Path(out) if out is not None else Path(study.uri) / REPORT_DIRS[split]

    data = StudyData(study, parse_data_roots(data_roots, list(settings.data_roots)), cache_dir, device)
    analysis.split_notes = data.split_notes
    external_indexes = check_externals(data, externals or [], label_map or {})
    storage.check_writable(str(analysis.out), "--out")  # before any model is evaluated or a look recorded
    check_report_folder(analysis.out, study)
    select_and_evaluate(analysis, data)
    analysis.confirmation = evaluate_confirmation(study, split, data)
    analysis.downloaded_bytes = data.downloaded_bytes
    if resamples:
        for dataset in dict.fromkeys(chosen.dataset for chosen in analysis.selected):
            evaluations = [chosen.evaluation for chosen in analysis.selected if chosen.dataset == dataset]
            try:
                analysis.bootstraps[dataset] = bootstrap_split(dataset, evaluations, resamples, settings.seed)
            except ValueError as error:
                analysis.notes.append(f"no intervals for {dataset}: {error}")
    analysis.external = evaluate_elsewhere(analysis, data, externals or [], external_indexes, label_map or {},
                                           resamples, device)
    if split == "test" and (analysis.selected or analysis.failed):
        analysis.look = Look.of(analysis)
        analysis.earlier_looks, analysis.look_problems = earlier_looks(study.uri)
        unrecorded = record_look(study.uri, analysis.look)
        analysis.look_problems += [unrecorded] if unrecorded else []
    if saliency and "png" in formats:
        analysis.saliency = saliency_panels(analysis, data, saliency, device)
    if importance != "none":
        analysis.importances = importances(analysis, importance)
    build_tables(analysis)
    write_report(analysis, formats)
    return analysis


def check_search_finished(study_dir: str | Path, study_uri: str) -> None:
    """Refuse to evaluate on test the choices of a study whose search is unfinished (as study.confirm refuses
    to confirm them): each analysis of the test split is a look at it, and the finished study may choose other
    trials."""
    from study.results import unfinished_search

    undone = unfinished_search(study_uri)
    if undone:
        raise CxrError(f"{study_uri}: the study's search is unfinished: {'; '.join(undone)}. The trials it chooses on "
                       "validation may still change, and each analysis of the test split is recorded as a look at "
                       "it: let the study finish, or resume it if it stopped, with\n  python -m study.run --resume "
                       f"{quote(str(study_dir))}\nand analyse it then; or pass --allow-unfinished to evaluate its best "
                       "trials so far on test, or --split val to choose and evaluate on validation alone")


def importances(analysis: Analysis, evaluator: str) -> list[Importance]:
    """Each dataset's parameter importances over its completed trials (none if the space is unreadable)."""
    from study.analysis.importance import parameter_importance
    from study.analysis.reading import cell_columns

    try:
        dimensions = analysis.study.settings.search_space().dimensions
    except CxrError as error:
        analysis.notes.append(f"no hyperparameter importance: the study's search space does not parse ({error})")
        return []
    trials = cell_columns(analysis.trials, analysis.study.settings)
    return [parameter_importance(dataset, trials[trials["dataset"] == dataset], dimensions, analysis.metric,
                                 analysis.mode, evaluator, analysis.study.settings.seed)
            for dataset in sorted(trials["dataset"].unique())]


def comparison_heading(split: str, metric: str, top_k: int) -> str:
    """What the printed comparison's cells are: each model's best trial, or the mean of its top_k best."""
    cells = "best trial per model" if top_k == 1 else f"mean ± std of the {top_k} best trials per model"
    return f"Macro F1 on the {split} split ({cells}, chosen on {metric}):"


# ------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.analyze", description=__doc__.split("\n\n")[0],
        epilog="Writes <study dir>/report/ (report-val/ for --split val): report.md, tables/*.csv and *.parquet, "
               "figures/*.png, and analysis-files.json, their list. "
               "Exit status 2 on bad input (not a study, nothing finished, a changed split), 130 on Ctrl-C.")
    add = parser.add_argument
    add("study_dir", help="the study directory python -m study.run wrote (<storage>/<study name>)")
    add("--metric", default=None, help="validation metric the best trials are chosen on, e.g. val/accuracy; "
        "lower is better for a loss (default: the study's own metric, from study.json)")
    add("--split", default="test", choices=("val", "test"),
        help="split the chosen checkpoints are evaluated on (default: test, the held-out split)")
    add("--top-k", type=int, default=1, help="evaluate the k best trials per (dataset, model); table cells "
        "show their mean ± std (default: 1)")
    add("--bootstrap", type=int, default=RESAMPLES, metavar="N",
        help=f"resamples of the test split's patients for the 95%% intervals and paired differences (seeded with "
             f"the study's seed; at least {MIN_RESAMPLES}, or 0 for none; default: {RESAMPLES})")
    add("--importance", default="fanova", choices=(*EVALUATORS, "none"),
        help="Optuna's hyperparameter-importance evaluator over the completed trials: fanova, ped-anova, or "
             "none (default: fanova)")
    add("--external", action="append", default=None, metavar="NAME=DATASET:PATH",
        help="also evaluate each cell's best model, once, on every image of this dataset (repeatable; e.g. "
             "hospital-b=csv:/data/b/labels.csv); its loader options as --dataset-option NAME:KEY=VALUE "
             "(default: none; a study that held out sources is always evaluated on them)")
    add("--dataset-option", action="append", default=None, metavar="[NAME:]KEY=VALUE",
        help="a loader option of an --external set, repeatable (the study's own datasets keep the options saved "
             "in study.json) (default: none)")
    add("--label-map", action="append", default=None, metavar="FILE.yaml|EXTERNAL=STUDY",
        help="reconcile an external set's class names with the study's: a YAML file of 'external label: study "
             "class' lines, or one inline pair such as \"No finding=No Finding\"; repeatable. External images "
             "whose label has no counterpart are counted and left out (default: names must match)")
    add("--allow-unfinished", action="store_true",
        help="evaluate on the test split a study whose search is unfinished (trials errored, interrupted or not "
             "started), its best trials so far; without it such a study is refused there, as study.confirm refuses "
             "it (--split val is always allowed)")
    add("--saliency", type=int, default=SALIENCY_PER_CLASS, metavar="N",
        help="Grad-CAM figures: N seeded images per class of the evaluated split and of each external set, per "
             f"cell (0 for none; default: {SALIENCY_PER_CLASS})")
    add("--format", default=",".join(FORMATS),
        help=f"what to write, comma-separated from {','.join(FORMATS)} (default: all of them)")
    add("--out", default=None, help="report folder, refused if it holds a report.md, tables or figures that "
        "study.analyze did not write, or the report of another study (analysis-files.json names the study "
        "analysed); an earlier report of this study there is replaced, saying which of its files are gone "
        "(default: <study dir>/report, or <study dir>/report-val for --split val)")
    add("--data-root", action="append", default=None, metavar="[DATASET=]PATH",
        help="where a dataset lies on this machine, if not where the study read it; DATASET= where the study has "
             "several; repeatable (default: the roots in study.json)")
    add("--cache-dir", default=None, help="decoded-image cache (default: the study's, else $CXR_TUNE_CACHE "
        "or ~/.cache/cxr-tune)")
    add("--device", default="auto", help="device for the evaluations: auto, cpu, cuda, cuda:1 "
        "(default: auto, a GPU if there is one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
        externals, label_map = [], {}
        if args.external or args.dataset_option or args.label_map:  # the external module loads torch: only if asked
            from study.analysis.external import parse_externals, parse_label_map

            externals = parse_externals(args.external, args.dataset_option)
            label_map = parse_label_map(args.label_map)
        analysis = analyze(args.study_dir, metric=args.metric, split=args.split, top_k=args.top_k,
                           formats=formats, out=args.out, data_roots=args.data_root, cache_dir=args.cache_dir,
                           device=args.device, resamples=args.bootstrap, importance=args.importance,
                           externals=externals, label_map=label_map, saliency=args.saliency,
                           allow_unfinished=args.allow_unfinished)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no complete report; run the same command again. The study is unchanged, but for the "
              "record of this analysis's look at the test split if its evaluation had finished (analyses/)",
              file=sys.stderr)
        return 130
    from study.tables import markdown_table

    for note in analysis.notes + analysis.look_problems:
        print(f"note: {note}")
    if analysis.look is not None:
        from study.analysis.looks import history

        print(f"test split: {history(analysis.look, analysis.earlier_looks)}")
    if analysis.study.remote:
        print(f"downloaded {analysis.downloaded_bytes / 1e6:,.1f} MB of weights from {analysis.study.uri} "
              f"(cached for the next analysis)")
    shown = analysis.tables.get("_shown_comparison_f1_macro")
    if shown is not None:
        print(f"\n{comparison_heading(analysis.split, analysis.metric, analysis.top_k)}\n")
        print(markdown_table(shown))
    elsewhere = analysis.tables.get("_shown_external_accuracy")
    if elsewhere is not None:
        print(f"\nAccuracy on the internal {analysis.split} split and elsewhere (held-out sources, --external):\n")
        print(markdown_table(elsewhere))
    print(f"\nreport: {analysis.out / 'report.md' if 'md' in formats else analysis.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
