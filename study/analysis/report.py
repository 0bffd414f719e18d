"""Writing the report: report.md, every table as CSV and Parquet, and the figures."""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from pathlib import Path
from shlex import quote

import numpy as np
import pandas as pd

from cxrnets.errors import CxrError
from study import storage
from study.analysis.figures import write_figures
from study.analysis.looks import history
from study.analysis.report_tables import NO_SPREAD, best_model_on_validation, never_predicted, reported_metric, slug
from study.analysis.selection import Analysis
from study.analysis.uncertainty import FEW_PATIENTS, SplitBootstrap
from study.tables import (METRIC_TITLES, NOT_SET, PAPER_METRICS, STATUSES, STOPPED_EARLY, interval_text,
                          markdown_table)

log = logging.getLogger("study.analyze")


FILES_LIST = "analysis-files.json"  # the files study.analyze wrote in its report folder, which its next run replaces
OUTPUTS = {"tables": (".csv", ".parquet"), "figures": (".png",)}  # folder -> the kinds of file written there


def report_files(out: Path) -> set[str]:
    """The files now in `out` (paths relative to it) of the kinds the analysis writes, where it writes them:
    report.md, tables/*.csv and *.parquet, figures/*.png."""
    found = {"report.md"} if (out / "report.md").is_file() else set()
    for folder, suffixes in OUTPUTS.items():
        if (out / folder).is_dir():
            found |= {f"{folder}/{path.name}" for path in (out / folder).iterdir()
                      if path.is_file() and path.suffix in suffixes}
    return found


def study_record(study) -> dict[str, str]:
    """What FILES_LIST records of the study analysed (study.analysis.reading.Study): where it lies, its name, and
    when it was created, which tells it from another study of the same name."""
    return {"uri": study.uri, "name": study.settings.name, "created": study.settings.created}


def earlier_study(out: Path) -> dict[str, str] | None:
    """The study (study_record's fields) whose analysis wrote `out`, as its FILES_LIST records it or, from before
    the list recorded it, as its report.md's title and header name it; None where neither says."""
    listing = out / FILES_LIST
    if listing.exists():
        recorded = json.loads(listing.read_text()).get("study")  # earlier_files has read it whole
        if recorded is not None:
            if not (isinstance(recorded, dict) and isinstance(recorded.get("uri"), str)):
                raise CxrError(f"{listing}: its \"study\" is {recorded!r}, not the study study.analyze records "
                               f"there; delete {out}, or pass another --out")
            return recorded
    if not written_by_an_earlier_analysis(out / "report.md"):
        return None
    text = (out / "report.md").read_text(errors="replace")[:5000]
    name = re.match(r"# Study `([^`]*)`", text)
    where = re.search(r"^- Study directory: `([^`]*)`(?: \(created ([^)]*)\))?", text, re.MULTILINE)
    if where is None:
        return None
    return {"uri": where.group(1), "name": name.group(1) if name else "", "created": where.group(2) or ""}


def same_study(recorded: dict[str, str], study) -> bool:
    """Whether `recorded` (earlier_study's) is `study`: the same location, or the same name and creation time (the
    study moved since, with its report)."""
    ours = study_record(study)
    return recorded["uri"] == ours["uri"] or (recorded.get("name"), recorded.get("created")) == (
        ours["name"], ours["created"])


def earlier_files(out: Path) -> set[str]:
    """What earlier analyses wrote in `out`, as their FILES_LIST says; without one, a report of a study.analyze
    from before that list (its report.md says who wrote it) wrote every report file there."""
    listing = out / FILES_LIST
    if not listing.exists():
        return report_files(out) if written_by_an_earlier_analysis(out / "report.md") else set()
    try:
        return {str(name) for name in json.loads(listing.read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CxrError(f"{listing}: not a readable list of the files study.analyze wrote in {out} ({error}): delete "
                       "it and the report files it listed, or pass another --out") from error


def written_by_an_earlier_analysis(report: Path) -> bool:
    """Whether `report` is a report.md that study.analyze wrote (its title, and its header naming the command)."""
    try:
        text = report.read_text(errors="replace")[:5000]
    except OSError:
        return False
    return text.startswith("# Study `") and "by `python -m study.analyze`" in text


def check_report_folder(out: Path, study) -> set[str]:
    """Refuse a report folder holding files the analysis did not write where it writes, or another study's
    analysis (it would overwrite or delete them); returns what earlier analyses of `study`
    (study.analysis.reading.Study) wrote there, which the next report replaces."""
    earlier = earlier_files(out)
    recorded = earlier_study(out)
    if earlier and recorded is not None and not same_study(recorded, study):
        named = f"study `{recorded.get('name') or '?'}` at {recorded['uri']}"
        raise CxrError(f"--out {out}: holds the report of another {named}; analysing study "
                       f"`{study.settings.name}` ({study.uri}) there would replace it and delete its tables and "
                       f"figures: pass another --out, or delete {out} first if that report is no longer wanted")
    theirs = sorted(report_files(out) - earlier)
    if theirs:
        more = f" and {len(theirs) - 1} more" if len(theirs) > 1 else ""
        raise CxrError(f"--out {out}: holds {theirs[0]}{more}, which study.analyze did not write (not listed in the "
                       f"{FILES_LIST} it writes there); the report would overwrite or delete them: move them "
                       "elsewhere, or pass another --out")
    return earlier


def _for_files(table: pd.DataFrame) -> pd.DataFrame:
    """Columns Parquet can store: mixed-type object columns become text."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object:
            kinds = {type(v) for v in table[column] if not (v is None or v is pd.NA or
                                                            (isinstance(v, float) and np.isnan(v)))}
            if len(kinds) > 1 or not kinds <= {str, int, float, bool, np.int64, np.float64, np.bool_}:
                table[column] = table[column].map(lambda v: None if v is None or v is pd.NA or
                                                  (isinstance(v, float) and np.isnan(v)) else str(v))
    table.columns = [str(c) for c in table.columns]
    return table


def write_report(analysis: Analysis, formats: tuple[str, ...]) -> None:
    """Write the report into analysis.out, replacing what an earlier analysis wrote there (no stale table or
    figure stays) and nothing else, and say on stderr what of an earlier report it replaced."""
    out = analysis.out
    earlier = check_report_folder(out, analysis.study) & report_files(out)
    earlier_split = recorded_split(out)
    for name in earlier:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    try:
        _write_files(analysis, formats)
    finally:  # an interrupted report lists what it wrote too: report_files holds nothing else by now
        listing = out / f"{FILES_LIST}.partial"
        listing.write_text(json.dumps({"written_by": "python -m study.analyze", "study": study_record(analysis.study),
                                       "split": analysis.split, "files": sorted(report_files(out))}, indent=1) + "\n")
        listing.replace(out / FILES_LIST)  # whole or not at all
    replaced = replaced_words(out, earlier, earlier_split, analysis.split)
    if replaced:
        log.warning(replaced)
    log.info("report written to %s", out / "report.md" if "md" in formats else out)


def recorded_split(out: Path) -> str | None:
    """The split of the earlier report in `out`, as its FILES_LIST records it (check_report_folder has read that
    whole); None where there is none, or it is from before the list recorded the split."""
    listing = out / FILES_LIST
    split = json.loads(listing.read_text()).get("split") if listing.exists() else None
    return split if isinstance(split, str) else None


def replaced_words(out: Path, earlier: set[str], earlier_split: str | None, split: str) -> str | None:
    """What this report of `split` replaced in `out`, where it is worth a warning: an earlier report of another
    split, or files of an earlier report (`earlier`) that it deleted and did not write again."""
    gone = sorted(earlier - report_files(out))
    other_split = earlier_split is not None and earlier_split != split
    if not (gone or other_split):
        return None
    text = (f"{out}: this report of the {split} split replaced the earlier report there"
            + (f", of the {earlier_split} split" if other_split else ""))
    if gone:
        shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
        text += f", and deleted {len(gone)} of its files that it does not write again ({shown})"
    return text + "; to keep a report, give the next analysis another --out"


def _write_files(analysis: Analysis, formats: tuple[str, ...]) -> None:
    out = analysis.out
    tables_dir, figures_dir = out / "tables", out / "figures"
    if "csv" in formats or "parquet" in formats:
        tables_dir.mkdir(parents=True, exist_ok=True)
        for name, table in analysis.tables.items():
            if name.startswith("_"):
                continue
            stored = _for_files(table)
            if "csv" in formats:
                stored.to_csv(tables_dir / f"{name}.csv", index=False)
                analysis.files.append(tables_dir / f"{name}.csv")
            if "parquet" in formats:
                stored.to_parquet(tables_dir / f"{name}.parquet", index=False)
                analysis.files.append(tables_dir / f"{name}.parquet")
    if "png" in formats:
        write_figures(analysis, figures_dir)
        analysis.files += list(analysis.figures.values())
    if "md" in formats:
        (out / "report.md").write_text(render_markdown(analysis, formats))
        analysis.files.append(out / "report.md")


def render_markdown(analysis: Analysis, formats: tuple[str, ...]) -> str:
    settings, tables = analysis.study.settings, analysis.tables
    split_name = "test" if analysis.split == "test" else "validation"
    figures = "png" in formats
    lines = [f"# Study `{settings.name}`: analysis", ""] + header_lines(analysis) + [""]

    summary = analysis.summary
    lines += ["## Search summary", ""]
    shown = [("trials run", summary["trials"])]
    shown += [(status, summary[status]) for status in STATUSES]
    shown += [("epochs spent", f"{summary['epochs spent']} of {summary['epochs without early stopping']} "
                               f"({summary['trials']} trials × {summary['max epochs']} epochs)"),
              ("ASHA saving", f"{summary['ASHA saving']:.0%} of the epochs (not run by the trials it stopped)"),
              *([("epochs not run otherwise", f"{summary['epochs not run otherwise']} (trials that diverged, "
                                              "failed or are unfinished)")]
                if summary.get("epochs not run otherwise") else []),
              ("epochs per trial", f"mean {summary['epochs per trial (mean)']:.2f}, min "
                                   f"{summary['epochs per trial (min)']}, max {summary['epochs per trial (max)']}"),
              ("trial compute time", f"{summary['trial compute seconds']:.0f} s")]
    if "wall seconds" in summary:
        shown.append(("wall time (first to last report)", f"{summary['wall seconds']:.0f} s"))
    lines += [markdown_table(pd.DataFrame(shown, columns=["quantity", "value"]).astype(str)), ""]
    lines += ["`stopped early`: ended before the last epoch without diverging (ASHA stopped it); "
              "`unfinished`: no end recorded (still running, or the study was interrupted).", ""]

    lines += [f"## Comparison ({split_name} split)", ""]
    lines += [f"Each cell: the best trial of that dataset and model on {analysis.metric} (validation), "
              f"evaluated once on the {'held-out ' if analysis.split == 'test' else ''}{split_name} split from its "
              "best checkpoint. "
              "For multi-label datasets accuracy is label-wise (the paper's accuracy).", ""]
    if analysis.bootstraps:
        lines += [uncertainty_paragraph(analysis), ""]
    compared = [m for m in PAPER_METRICS if f"_shown_comparison_{m}" in tables]
    if not compared:
        lines += [f"No cell has a figure on the {split_name} split." if analysis.failed
                  else "No cell could be evaluated (see Skipped trials below).", ""]
    for metric in compared:
        lines += [f"### {METRIC_TITLES[metric]}", "", markdown_table(tables[f"_shown_comparison_{metric}"]), ""]
        lines += no_spread_note(tables[f"_shown_comparison_{metric}"])
    lines += failed_cells_note(analysis, split_name)
    lines += absent_classes_note(analysis, analysis.split)
    if "majority_baseline" in tables:
        lines += ["### Majority-class baseline", "",
                  f"Always predicting the training split's most frequent class (multi-label: each label present in "
                  f"most training images), scored on the same {split_name} images: the floor a model must beat.", "",
                  markdown_table(tables["_shown_majority_baseline"]), ""]
        lines += no_spread_note(tables["_shown_majority_baseline"])
    if "paired_differences" in tables:
        lines += paired_section(analysis)
    if analysis.confirmation is not None:
        lines += seed_section(analysis)
    if len(analysis.external) or analysis.saliency:
        lines += elsewhere_section(analysis, figures)

    lines += ["## Evaluated trials", ""]
    if len(tables["selected_trials"]):
        lines += [markdown_table(tables["_shown_selected_trials"]), ""]
        lines += no_spread_note(tables["_shown_selected_trials"])
        lines += ["`best epoch`: the trial's best epoch on validation; `evaluated epoch`: the checkpoint evaluated "
                  "(they differ only where the best checkpoint is gone, or ties).", ""]
        lines += predict_commands(analysis)
    else:
        lines += ["None.", ""]
    if analysis.notes:
        lines += ["### Skipped trials and notes", ""]
        lines += [f"- {note}" for note in analysis.notes] + [""]

    lines += earlier_looks_section(analysis)

    lines += ["## Best trials on validation (as `python -m study.run` prints them)", "",
              markdown_table(tables["validation_best"]), ""]

    lines += ablation_section(analysis)

    if analysis.importances:
        lines += importance_section(analysis, figures)

    lines += ["## Confusion matrices and per-class metrics", ""]
    best = [s for s in analysis.selected if s.rank == 1]
    if not best and not analysis.failed:
        lines += ["None (no cell could be evaluated).", ""]
    else:
        lines += ["Each class against the rest: precision (positive predictive value), recall (sensitivity), "
                  "specificity (the images not of the class that the model does not call so), F1, and the ROC AUC "
                  "of the class's probability; `support` and `patients`: the class's images and patients on "
                  "the split."
                  + (" Intervals (95%): precision, recall and specificity are proportions of images, and over the "
                     "few patients a class often has the bootstrap's percentile interval of a proportion is too "
                     "narrow (at 0 or 1 it has no width), so theirs are exact binomial intervals with the patients "
                     "as clusters (Korn & Graubard 1998: Clopper-Pearson at the images' effective sample size; "
                     "at 0 or 1 each patient counts once); F1 and ROC AUC: the patient bootstrap's."
                     if analysis.bootstraps else ""), ""]
    for chosen in best:
        name = f"{slug(chosen.dataset)}_{slug(chosen.model)}"
        evaluation = chosen.evaluation
        lines += [f"### {chosen.dataset} / {chosen.model}", "",
                  f"Trial `{chosen.candidate.trial_id}` ({chosen.candidate.trial_name}), epoch {evaluation.epoch}, "
                  f"{split_name} split: {len(evaluation.y_true)} images. "
                  + ("Rows: true class; columns: predicted class." if not evaluation.multilabel
                     else "Per label: true negatives, false positives, false negatives, true positives."), ""]
        if figures and f"confusion_{name}" in analysis.figures:
            lines += [f"![confusion matrix, {chosen.dataset} / {chosen.model}](figures/confusion_{name}.png)", ""]
        lines += [markdown_table(tables[f"confusion_{name}"]), "", markdown_table(tables[f"_shown_per_class_{name}"]), ""]
        unpredicted = never_predicted(evaluation)
        if unpredicted:
            lines += [f"Never predicted on this split: {', '.join(unpredicted)}. Precision is then 0/0: the table "
                      "shows 0 by scikit-learn's convention (zero_division=0, as in the macro averages above), not as "
                      "a measurement, and no interval.", ""]
        lines += unmeasurable_sentence(tables[f"per_class_{name}"])
        if chosen.dataset in analysis.bootstraps:
            per_class = tables[f"per_class_{name}"]
            lines += (one_patient_sentence(per_class) + one_patient_rest_sentence(analysis.bootstraps[chosen.dataset])
                      + no_spread_sentences(per_class))
    for failed in analysis.failed:
        if failed.rank == 1:
            lines += [f"### {failed.dataset} / {failed.model}", "",
                      f"Trial `{failed.candidate.trial_id}` ({failed.candidate.trial_name}), chosen on validation, "
                      f"failed on the {split_name} split ({failed.reason}): no confusion matrix, per-class figures, "
                      "ROC curve or calibration.", ""]
    roc = [(name, path) for name, path in analysis.figures.items() if name.startswith("roc_")]
    if figures and roc:
        lines += ["### ROC curves", "",
                  "Per class, each chosen model's ROC curve of that class against the rest (AUC in the legend) and, as "
                  "a dot, where its own decision sits (the most probable class; multi-label: probability 0.5): "
                  "a dot below its curve means a threshold on that class's probability would reach a higher "
                  "sensitivity at the same specificity than the model's decision does (above it: the decision, which "
                  "weighs the other classes' probabilities too, does better than any threshold on this one's).", ""]
        lines += [f"![ROC, {name.removeprefix('roc_')}](figures/{path.name})" for name, path in roc] + [""]

    lines += calibration_section(analysis, split_name, figures)

    if figures:
        lines += ["## Curves", ""]
        for name, path in analysis.figures.items():
            if name.startswith("curves_") or name.startswith("pretrained_"):
                lines += [f"![{name}](figures/{path.name})", ""]

    stored = [n for n in tables if not n.startswith("_")]
    kinds = [k for k in ("csv", "parquet") if k in formats]
    if kinds:
        lines += ["## Files", "", "Every table above as " + " and ".join(k.upper() for k in kinds)
                  + " under `tables/`: " + ", ".join(f"`{n}`" for n in stored) + ".", ""]
        if any(n.startswith("predictions_") for n in stored):
            lines += [f"`predictions_<dataset>_<model>`: each {split_name} image's true and predicted class and "
                      "class probabilities under each cell's chosen model (its relpath and patient as in the "
                      "study's split), from which the figures above can be recomputed.", ""]
    return "\n".join(lines)


def header_lines(analysis: Analysis) -> list[str]:
    """The report's opening bullets: the study, how its trials were chosen and evaluated, and what that
    means for the figures."""
    study, settings = analysis.study, analysis.study.settings
    split_name = "test" if analysis.split == "test" else "validation"
    lines = [f"- Study directory: `{study.uri}` (created {settings.created})",
             f"- Search space: `{settings.space_source}`; datasets: "
             + ", ".join(f"`{d}`" for d in settings.data_roots),
             f"- Trials chosen on **{analysis.metric}** ({'lower' if analysis.mode == 'min' else 'higher'} is "
             f"better, validation split); evaluated once on the **{split_name}** split"
             + top_k_words(analysis),
             f"- Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `python -m study.analyze`"]
    if analysis.split == "val":
        lines.append("- **Optimistic:** the trials were chosen on this validation split, so its figures favour "
                     "them; the test split (`--split test`, the default) gives the unbiased ones")
    lines += [f"- **Copies across the split:** {note}" for note in analysis.split_notes.values()]
    if analysis.look is not None:
        lines.append(f"- Test split: {history(analysis.look, analysis.earlier_looks)}")
    return lines


def top_k_words(analysis: Analysis) -> str:
    """With --top-k above 1, how many trials the cells average: fewer where the study kept fewer weights."""
    if analysis.top_k == 1:
        return ""
    held = sorted(set(Counter((s.dataset, s.model) for s in analysis.selected).values()))
    if not held or held == [analysis.top_k]:
        return f"; cells are the mean ± std of the {analysis.top_k} best trials"
    here = f"{held[0]}" if len(held) == 1 else f"{held[0]} to {held[-1]}"
    keep = analysis.study.settings.keep
    why = (f"the study kept the weights of {keep} trial{'s' if keep != 1 else ''} per model (--keep {keep})"
           if keep != "all" and keep < analysis.top_k else "see the notes")
    return f"; cells are the mean ± std of up to {analysis.top_k} best trials (here {here}: {why})"


def joined_names(names: list[str]) -> str:
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def failed_cells_note(analysis: Analysis, split_name: str) -> list[str]:
    """The cells whose trial chosen on validation failed on the split, and why no other trial fills them (empty
    when none)."""
    if not analysis.failed:
        return []
    which = "; ".join(f"{failed.dataset} / {failed.model}: trial `{failed.candidate.trial_id}` (rank {failed.rank}), "
                      f"{failed.reason}" for failed in analysis.failed)
    return [f"`failed on {analysis.split}`: the trial chosen on validation could not be scored on the {split_name} "
            f"split ({which}). The cell has no figure there, nor any comparison: the next trial does not take its "
            f"place, as that would choose the cell's model by its {split_name} figures.", ""]


# The averages that count a class with no image on the split as 0 (cxrnets.metrics: scikit-learn's macro average
# over all the dataset's classes); the macro ROC AUC leaves such a class out.
MACRO_COUNTING_ABSENT = ("precision_macro", "recall_macro", "f1_macro")


def absent_classes_note(analysis: Analysis, part: str) -> list[str]:
    """The classes with no image on `part` ("val" or "test") of each evaluated dataset, and what the macro averages
    make of them (empty when every class has images there)."""
    absent: dict[str, list[str]] = {}
    for chosen in analysis.selected:
        names = chosen.evaluation.classes_absent.get(part, [])
        if names:
            absent.setdefault(chosen.dataset, names)
    if not absent:
        return []
    split_name = "test" if part == "test" else "validation"
    named = "; ".join(f"{dataset}: {', '.join(names)}" for dataset, names in absent.items())
    return [f"Classes with no image on the {split_name} split: {named}. The macro precision, recall and F1 count "
            "each as 0 (scikit-learn's macro average over all the dataset's classes, as the selection on validation "
            "does): no model can reach 1 on these averages; the macro ROC AUC leaves such classes out.", ""]


def unmeasurable_sentence(per_class: pd.DataFrame) -> list[str]:
    """The classes with no image on the split, whose recall and F1 the per-class table leaves blank, and those on
    every image, whose specificity it leaves blank (empty when none)."""
    absent = list(per_class.loc[per_class["support"] == 0, "class"])
    everywhere = list(per_class.loc[per_class["specificity"].isna(), "class"])
    parts = ([f"{joined_names(absent)}: no image on this split (support 0): recall and F1 are not measurable"]
             if absent else [])
    parts += ([f"{joined_names(everywhere)}: on every image of this split (no image without it): specificity is not "
               "measurable"] if everywhere else [])
    if not parts:
        return []
    text = "; ".join(parts) + " (— here, empty in the CSV)"
    if absent:
        text += (f"; the macro precision, recall and F1 above count {'it' if len(absent) == 1 else 'each'} as 0 "
                 "(scikit-learn's macro average over all the dataset's classes, as the selection on validation does)")
    return [text + ".", ""]


def one_patient_sentence(per_class: pd.DataFrame) -> list[str]:
    """The classes of one patient, whose F1 and ROC AUC have no interval (empty when none)."""
    alone = list(per_class.loc[per_class["patients"] == 1, "class"])
    if not alone:
        return []
    return [f"{joined_names(alone)}: one patient on this split, whom a resample draws or not, so F1 and ROC AUC "
            "have no interval; precision, recall and specificity keep their exact ones.", ""]


def one_patient_rest_sentence(bootstrap: SplitBootstrap) -> list[str]:
    """The classes whose rest (the images not of them) is one patient's, whose ROC AUC has no interval (empty
    when none)."""
    lone_rest = [name for name, count in bootstrap.rest_patients.items()
                 if count == 1 and bootstrap.class_patients[name] >= 2]  # else one_patient_sentence's
    if not lone_rest:
        return []
    return [f"{joined_names(lone_rest)}: the images not of {'it' if len(lone_rest) == 1 else 'each'} on this split "
            "are one patient's, whom a resample draws or not, and without them the one-vs-rest ROC AUC is undefined "
            "(no negatives): ROC AUC has no interval; precision, recall, specificity and F1 keep theirs.", ""]


def no_spread_note(shown: pd.DataFrame) -> list[str]:
    """Why the table's `[no spread]` figures have no interval (empty when it has none)."""
    if not shown.astype(str).apply(lambda column: column.str.contains(NO_SPREAD, regex=False)).any(axis=None):
        return []
    return [f"`{NO_SPREAD}`: the figure is the same in every resample, so it has no interval (one would have no "
            "width and say nothing of its uncertainty). A resample keeps the split's number of patients of each "
            "class: a figure that depends only on each class being all right or all wrong (a constant predictor's "
            "macro recall) does not move, nor, where each patient has one image, does any figure counted over a "
            "class's images once every image of the class is right or every one wrong.", ""]


def no_spread_sentences(per_class: pd.DataFrame) -> list[str]:
    """The classes whose F1 or ROC AUC every resample repeats, shown `[no spread]`, and why (empty when none)."""
    reasons = {
        "f1": ("F1", "none of the class's images is right, or all of them and all its predictions are; read "
                     "precision's and recall's"),
        "roc_auc": ("ROC AUC", "a resample keeps images of the class and images not of it, and each of the class's "
                               "images scores above every image not of it (AUC 1), below every one (0), or the same "
                               "as all (0.5)")}
    lines = []
    for column, (name, reason) in reasons.items():
        flat = list(per_class.loc[per_class[f"{column} no spread"], "class"]) if f"{column} no spread" in per_class \
            else []
        if flat:
            lines += [f"{name} of {joined_names(flat)} is the same in every resample of this split (`{NO_SPREAD}`, "
                      f"no interval): {reason}.", ""]
    return lines


def calibration_section(analysis: Analysis, split_name: str, figures: bool) -> list[str]:
    """Whether each chosen model's probabilities mean what they say."""
    if "calibration" not in analysis.tables:
        return []
    kinds = set(analysis.tables["calibration"]["forecasts"])
    forecasts, brier = [], []
    if "top label" in kinds:
        forecasts.append("single-label, one per image: the predicted class, at its probability (top-label)")
        brier.append("single-label summed over the classes, 2 for a confident wrong answer")
    if "each label" in kinds:
        forecasts.append("multi-label, one per image and label: the label's presence, at its probability")
        brier.append("multi-label averaged over the labels, 1 for a confident wrong answer on every label")
    lines = [f"## Calibration ({split_name} split)", "",
             "Whether a model's probabilities can be read as such. Each probability is a forecast: "
             + "; ".join(forecasts) + ". The **Brier score** is the mean squared distance between the "
             "probabilities and the truth (0 best; " + "; ".join(brier) + "), the **ECE** (expected calibration "
             "error) the forecast-weighted mean gap between how often the forecasts in each of 10 probability bins "
             "came true and their probability (0 for a model right 70 % of the times it says 70 %), the "
             "**classwise ECE** the same gap for each class's own probability as a forecast of that class, on every "
             "image, averaged over the classes (it reads the probabilities a threshold on one class would use, which "
             "the top label ignores, and weighs a rare class as much as a common one)"
             + (", with 95% intervals over the same resampled patients as above" if analysis.bootstraps else "")
             + "; `mean probability` and `observed`: over all forecasts (a mean probability far above the observed "
             "share is overconfidence). A small split puts a handful of forecasts in most bins, which makes the "
             "ECE, and more so its resampled values, lean high: read the intervals and the marker sizes in the "
             "diagram.", ""]
    lines += class_weight_sentence(analysis)
    lines += [markdown_table(analysis.tables["_shown_calibration"]), ""]
    lines += no_spread_note(analysis.tables["_shown_calibration"])
    if figures:
        lines += [f"![calibration, {name.removeprefix('reliability_')}](figures/{path.name})"
                  for name, path in analysis.figures.items() if name.startswith("reliability_")] + [""]
    return lines


def class_weight_sentence(analysis: Analysis) -> list[str]:
    """Which chosen models were trained with a class-weighted loss, and what it does to their probabilities
    (empty when none was)."""
    from cxrnets.config import TrainConfig

    chosen = [c for c in analysis.selected if c.rank == 1]
    weighted = [f"{c.dataset} / {c.model}" for c in chosen if not c.evaluation.multilabel
                and c.evaluation.config.get("balance_classes", TrainConfig.balance_classes)]
    if not weighted:
        return []
    who = ("Every model here was" if len(weighted) == len(chosen)
           else f"{joined_names(weighted)} {'was' if len(weighted) == 1 else 'were'}")
    return [f"{who} trained with a class-weighted cross-entropy (each class weighted by the inverse of its "
            "frequency in the training split), which moves the probabilities toward the rare classes: a rare "
            "class's probability runs above how often it comes true and the common class's below, miscalibration "
            "that the ECE and Brier score count and plain cross-entropy would not add.", ""]


def earlier_looks_section(analysis: Analysis) -> list[str]:
    """Each earlier analysis of the test split: when, its selection, what it evaluated."""
    if analysis.look is None:
        return []
    differing = any(not look.same_models(analysis.look) for look in analysis.earlier_looks)
    if not (differing or analysis.look_problems):
        return []  # the header's line says it all
    lines = ["### Earlier looks at the test split", ""]
    if analysis.earlier_looks:
        rows = [{"analysed (UTC)": look.time, "metric": look.metric, "top-k": look.top_k,
                 "trials evaluated (id@epoch)": "; ".join(f"{cell}: {', '.join(ids)}"
                                                          for cell, ids in look.evaluated.items()),
                 "elsewhere": ", ".join(look.external),
                 "same trials as this analysis": "yes" if look.same_models(analysis.look) else "no"}
                for look in analysis.earlier_looks]
        lines += [markdown_table(pd.DataFrame(rows).astype(str)), ""]
    lines += [f"- {problem}" for problem in analysis.look_problems] + ([""] if analysis.look_problems else [])
    return lines


def predict_commands(analysis: Analysis) -> list[str]:
    """How to run each cell's chosen model on new images."""
    chosen = [c for c in analysis.selected if c.rank == 1]
    if not chosen:
        return []
    lines = ["Each cell's chosen model on new images, no labels needed (one CSV row per image: predicted class "
             "and each class's probability):", ""]
    for c in chosen:
        uri = c.candidate.weights.uri
        # A bucket's weights: the copy this analysis evaluated (cxrnets.predict reads local files).
        local = c.evaluation.weights_file if storage.is_remote(uri) and c.evaluation.weights_file else uri
        lines.append(f"- {c.dataset} / {c.model}: `python -m cxrnets.predict {local} IMAGES_OR_FOLDERS "
                     f"--out predictions.csv`" + (f" (this machine's copy of {uri})" if local != uri else ""))
    return lines + [""]


def split_size(bootstrap) -> str:
    """`d: 18 images of 11 patients`, or for a dataset without patient ids `d: 12 images, no patient ids`."""
    if bootstrap.patient_ids:
        return f"{bootstrap.dataset}: {bootstrap.images} images of {bootstrap.patients} patients"
    joined = (f": resampled as {bootstrap.patients} once near-identical X-rays are joined"
              if bootstrap.patients < bootstrap.images else "")
    return f"{bootstrap.dataset}: {bootstrap.images} images, no patient ids{joined}"


def uncertainty_paragraph(analysis: Analysis) -> str:
    """How the intervals were made, and on how many patients, per dataset."""
    bootstraps = list(analysis.bootstraps.values())
    first = bootstraps[0]
    sizes = "; ".join(split_size(b) for b in bootstraps)
    by_image = [b.dataset for b in bootstraps if not b.patient_ids]
    if len(by_image) < len(bootstraps):
        text = (f"In brackets: the 95% interval from {first.resamples:,} bootstrap resamples of the split's "
                f"**patients** (all images of a patient drawn together, within strata of each patient's rarest "
                f"class; seed {first.seed}), not of images: images of one patient are correlated. A patient here is "
                f"a patient id, or several joined where they share an image file or a near-identical X-ray, as the "
                f"split joins them, so the count can be below the split's patient ids. Stratified as pROC "
                f"does, each resample keeps the split's number of patients of each stratum, and every class of two "
                f"patients or more; patients alone in their stratum (a class's only patient) are resampled "
                f"together.")
    else:
        text = (f"In brackets: the 95% interval from {first.resamples:,} bootstrap resamples of the split's "
                f"images (near-identical X-rays drawn together, within strata of each image's class; seed "
                f"{first.seed}). Stratified as pROC does, each resample keeps the split's number of images of each "
                f"class.")
    several = [b.dataset for b in bootstraps if b.images > b.patients and b.patient_ids]
    if several:
        text += (" It keeps patients, not images: a figure over images resampled this way (the mean accuracy of "
                 "--top-k trials) still moves with the images each drawn patient brings, even where the predictions "
                 "are constant.")
    if by_image:
        text += (f" **No patient ids:** {joined_names(by_image)} {'names' if len(by_image) == 1 else 'name'} no "
                 "patients, so each image is its own patient there: resampled by image (near-identical X-rays, "
                 "the same image re-encoded or resized, drawn together). The same person's other X-rays (a set "
                 "without patient ids can hold one person's follow-ups under unrelated file names, as "
                 "covid-radiography does) count as independent, so the intervals there are optimistic: narrower "
                 "than over patients.")
    one_each = [b.dataset for b in bootstraps if b.images == b.patients]
    if one_each:
        text += (f" On {joined_names(one_each)} every resampled unit is one image, so each resample keeps each "
                 "class's images: a figure whose every class is all right or all wrong is the same in every "
                 f"resample, and is shown `{NO_SPREAD}` rather than with an interval of no width.")
    text += f" ({sizes}.)"
    text += (" Accuracy (and subset accuracy) of one trial or of the majority-class baseline, a proportion of images, "
             "gets the exact binomial interval with the patients as clusters instead, as a class's precision and "
             "recall do in the per-class tables.")
    if analysis.top_k > 1:
        text += (f" With --top-k {analysis.top_k} the interval is that of the cell's mean (the resampled one, for "
                 "accuracy too).")
    undefined = sorted({f"{b.dataset}: {', '.join(sorted(m for m, why in b.undefined.items() if why == reason))}: "
                        f"{reason}" for b in analysis.bootstraps.values() for reason in set(b.undefined.values())})
    if undefined:
        text += " Undefined intervals: " + "; ".join(undefined) + "."
    few = [f"{b.dataset}: " + ", ".join(f"{name} {count}" for name, count in b.few_patients().items())
           for b in analysis.bootstraps.values() if b.few_patients()]
    if few:
        unit = " (images, on a dataset without patient ids)" if by_image else ""
        text += (f" **Few patients:** classes with fewer than {FEW_PATIENTS} patients{unit} on the split ("
                 + "; ".join(few) + "): the intervals of averages over classes (macro precision, recall, F1 and "
                 "ROC AUC, classwise ECE), and of those classes' own F1 and ROC AUC, are too narrow over so few "
                 "patients (a resample can only redraw the few there are): read them as the least uncertainty "
                 "there is.")
    return text


def paired_section(analysis: Analysis) -> list[str]:
    """The pre-stated comparisons on the study metric, in words, and where the full table lies."""
    table = analysis.tables["paired_differences"]
    metric = reported_metric(analysis)
    shown = table[table["metric"] == metric]
    lines = [f"### Paired differences ({METRIC_TITLES.get(metric, metric)})", "",
             f"The comparison family, fixed before any {analysis.split} figure is seen: on "
             f"{METRIC_TITLES.get(metric, metric)}, each model against the majority-class baseline, and "
             f"each model against its row's model chosen best on validation ({len(shown)} comparisons). Each is "
             "the difference of the two figures with its 95% interval over the same resampled patients; a "
             "difference is called distinguishable from zero when its interval excludes zero (intervals not "
             f"adjusted for the {len(shown)} comparisons). Every metric's differences are in "
             "`tables/paired_differences`.", ""]
    for row in shown.itertuples(index=False):
        interval = interval_text(row.lower, row.upper, signed=True)
        if row.no_spread:
            interval, verdict = NO_SPREAD, "the same in every resample: no interval"
        elif pd.isna(row.lower) or pd.isna(row.upper):
            verdict = "no interval"
        else:
            verdict = "distinguishable" if row.distinguishable else "not distinguishable"
        lines.append(f"- {row.dataset}: {row.model} vs {row.versus}: {row.difference:+.3f} {interval}, {verdict}")
    first_failures: dict[tuple[str, str], object] = {}
    for failed in analysis.failed:
        first_failures.setdefault((failed.dataset, failed.model), failed)
    for (dataset, model), failed in first_failures.items():
        if dataset in analysis.bootstraps:
            against = ("; it was the model chosen best on validation, so no model is compared with it"
                       if best_model_on_validation(analysis, dataset) == model else "")
            lines.append(f"- {dataset}: {model}: failed on the {analysis.split} split (trial "
                         f"{failed.candidate.trial_id}): no paired difference{against}")
    for dataset in dict.fromkeys(shown.loc[shown["lower"].isna(), "dataset"]):
        bootstrap = analysis.bootstraps[dataset]
        if metric in bootstrap.undefined:
            instead = ("; accuracy's differences, which weigh every image alike, have theirs in "
                       "`tables/paired_differences`" if bootstrap.difference_defined("accuracy") else "")
            lines.append(f"- {dataset}: no interval: {bootstrap.undefined[metric]}{instead}.")
    return lines + [""]


def ablation_section(analysis: Analysis) -> list[str]:
    """The ablations (report_tables.ablation_tables), one section per dataset where the study has several, and
    what a row of them is."""
    ablations = {name.removeprefix("ablation_"): table for name, table in analysis.tables.items()
                 if name.startswith("ablation_")}
    stopped = (analysis.trials["status"] == STOPPED_EARLY).any()
    lines = ["## Ablations", "",
             f"Per value of each search dimension (continuous ones binned), on each dataset's trials: trials, how "
             f"they ended, epochs spent, and the best and median {analysis.metric} (each trial at its best epoch). "
             f"`{NOT_SET}`: trials the dimension does not apply to. Each row is marginal over the other search "
             "dimensions: it pools whatever values of them its trials drew, not holding them fixed"
             + (", and pools the trials ASHA stopped early, each at its best of the fewer epochs it ran, with those "
                "that ran every epoch" if stopped else "") + ".", ""]
    if analysis.metric.removeprefix("val/") in MACRO_COUNTING_ABSENT:
        lines += absent_classes_note(analysis, "val")
    datasets = sorted({dataset for table in ablations.values() for dataset in table["dataset"]})
    for dataset in datasets:
        heading = "###"
        if len(datasets) > 1:
            lines += [f"### {dataset}", ""]
            heading = "####"
        for dimension, table in ablations.items():
            own = table[table["dataset"] == dataset].drop(columns="dataset")
            lines += [f"{heading} {dimension}", "", markdown_table(own), ""]
    return lines


def importance_section(analysis: Analysis, figures: bool) -> list[str]:
    first = analysis.importances[0]
    title = {"fanova": "fANOVA", "ped-anova": "PED-ANOVA"}.get(first.evaluator, first.evaluator)
    lines = [f"### Hyperparameter importance ({title})", "",
             f"Optuna's {title} evaluator over each dataset's completed trials, each valued at its best epoch's "
             f"{analysis.metric}: the share of that value's variance each searched parameter explains. Trials "
             "ASHA stopped early are left out (their best is cut short), and so are parameters some trials "
             "lack (conditional dimensions).", ""]
    for importance in analysis.importances:
        if importance.table is None:
            lines += [f"{importance.dataset}: not estimated: {importance.reason}.", ""]
            continue
        name = f"importance_{slug(importance.dataset)}"
        if figures and name in analysis.figures:
            lines += [f"![{name}](figures/{name}.png)", ""]
        lines += [markdown_table(importance.table), ""]
        if importance.trials < 30:
            lines += [f"From {importance.trials} completed trials: read the order, not the decimals.", ""]
    return lines


def seed_section(analysis: Analysis) -> list[str]:
    """The seed repeats: the search's run of each cell next to the spread over new seeds."""
    confirmation, tables = analysis.confirmation, analysis.tables
    metric = reported_metric(analysis)
    title = METRIC_TITLES.get(metric, metric)
    lines = ["## Seed repeats (`python -m study.confirm`)", "",
             f"Each cell's selected configuration trained again with seeds {', '.join(map(str, confirmation.seeds))} "
             f"(initialisation and batch order; same split, {analysis.study.settings.max_epochs} epochs, no early "
             f"stopping), each seed's best epoch on {analysis.study.settings.metric} evaluated once on the "
             f"{analysis.split} split. {title}: the search's run next to the seeds' mean ± standard deviation.", ""]
    if not confirmation.complete:
        lines += [partial_confirmation(analysis), ""]
    summary = tables["seed_summary"]
    if len(summary):
        max_epochs = analysis.study.settings.max_epochs
        shorter = summary["search's epochs"] < summary["seeds' epochs"]
        shown = summary.assign(**{
            "search's run": ["—" if pd.isna(value) else f"{value:.3f}" + (
                f" (stopped at epoch {epochs:.0f} of {max_epochs})" if short else "")
                for value, epochs, short in zip(summary["search's run"], summary["search's epochs"], shorter)],
            "seeds": [("—" if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(s) else f" ± {s:.3f}"))
                      + f" ({n} of {k})" for m, s, n, k in zip(summary["seeds mean"], summary["seeds std"],
                                                               summary["seeds evaluated"], summary["seeds asked"])],
        })[["dataset", "model", "search's run", "seeds", "each seed"]]
        lines += [markdown_table(shown), ""]
        if shorter.any():
            lines += ["A search's run marked stopped trained fewer epochs than its seeds (ASHA stopped it early, or "
                      f"the search is unfinished), which train the full {max_epochs} with no early stopping: a gap "
                      "between the two is partly training length.", ""]
    differences = tables["seed_differences"].dropna(subset=["mean difference"])
    if len(differences):
        lines += [f"Between models, seed by seed ({title}, the seeds evaluated for both):", ""]
        for row in differences.itertuples(index=False):
            spread = "" if pd.isna(row.std) else f" ± {row.std:.3f}"
            lines.append(f"- {row.dataset}: {row.model} − {row.versus}: {row[4]:+.3f}{spread} over {row.seeds} seed(s)")
        lines.append("")
    lines += [f"- {note}" for note in confirmation.notes] + ([""] if confirmation.notes else [])
    return lines


def partial_confirmation(analysis: Analysis) -> str:
    """What a confirm run lacks: the seed runs that ended without an evaluation, and how; the failed ones,
    which a --resume runs again; and the unfinished ones, which a --resume continues."""
    runs = analysis.confirmation.runs
    resume = f"`python -m study.confirm {quote(analysis.study.uri)} --resume`"
    evaluated = sum(run.evaluation is not None for run in runs)
    text = f"**Partial:** {evaluated} of {len(runs)} seed runs evaluated"
    ended = [run for run in runs if run.ended and run.evaluation is None]
    if ended:
        text += ": " + "; ".join(
            f"seed {run.job.seed} of {run.job.dataset} / {run.job.model} {run.how_it_ended()}"
            + (", before writing weights" if run.best_epoch is None else " (see the notes below)") for run in ended)
    text += "."
    failed = [run for run in runs if run.failed]
    if failed:
        which = "; ".join(f"seed {run.job.seed} of {run.job.dataset} / {run.job.model}, after {run.epochs} epoch(s)"
                          + ("" if run.evaluation is None else ", evaluated at its best epoch before that")
                          for run in failed)
        text += (f" {len(failed)} seed run{'s' if len(failed) > 1 else ''} failed ({which}; the traceback of each: "
                 f"error.txt in its trial folder): once the cause is fixed, {resume} runs "
                 f"{'it' if len(failed) == 1 else 'them'} again from the last full state, then analyse again.")
    unfinished = [run for run in runs if not run.ended and not run.failed]
    if unfinished:
        some = sum(run.evaluation is not None for run in unfinished)
        so_far = ("" if not some else " (evaluated at the best epoch so far)" if some == len(unfinished)
                  else f" ({some} of them evaluated at the best epoch so far)")
        text += (f" {len(unfinished)} seed run{'s' if len(unfinished) > 1 else ''} unfinished{so_far}: continue "
                 f"with {resume}, then analyse again.")
    return text


def _change_words(row) -> str:
    if pd.isna(row.change):
        return "undefined"
    if getattr(row, "no_spread", ""):
        return f"{row.change:+.3f}, no spread"
    if pd.isna(row.change_lower) or pd.isna(row.change_upper):
        return f"{row.change:+.3f}"
    verdict = ("a drop" if row.change_upper < 0 else "a rise" if row.change_lower > 0
               else "no distinguishable change")
    return f"{row.change:+.3f} {interval_text(row.change_lower, row.change_upper, signed=True)}, {verdict}"


def marked_no_spread(shown: pd.DataFrame, rows: pd.DataFrame, internal: str) -> pd.DataFrame:
    """`shown` (report_tables' table of one metric of the external comparison) with `[no spread]` after each figure
    that is the same in every resample (`rows`: the comparison's rows of that metric; `internal`: the column of
    the internal figures)."""
    if "no_spread" not in rows:
        return shown
    keys = [column for column in ("dataset", "model", "set", "class") if column in shown]
    flat = {tuple(row[k] for k in keys): row for row in rows[rows["no_spread"] != ""].to_dict("records")}
    marked = shown.copy()
    for position, cells in marked.iterrows():
        row = flat.get(tuple(cells[k] for k in keys))
        for side, column in (("internal", internal), ("external", "external")):
            if row is not None and row[f"{side}_no_spread"]:
                marked.at[position, column] = f"{row[side]:.3f} [no spread]"
    return marked


def no_spread_lines(table: pd.DataFrame) -> list[str]:
    """Why the `[no spread]` figures of the external comparison have no interval, one line per reason."""
    from study.analysis.external import ALL_PRESENT, EXTERNAL_TITLES

    if "no_spread" not in table:
        return []
    lines = []
    flat = table[table["no_spread"] != ""]
    for reason, rows in flat.groupby("no_spread", sort=False):
        figures = []
        for (metric, class_name), cells in rows.groupby(["metric", "class"], sort=False):
            title = EXTERNAL_TITLES[metric][0].lower() + EXTERNAL_TITLES[metric][1:]
            figure = title if class_name == ALL_PRESENT else f"{class_name}'s {title}"
            figures.append(f"{figure} ({joined_names(list(dict.fromkeys(cells['model'])))})")
        lines.append(f"- No spread: {'; '.join(figures)}: {reason}. An interval would have no width: neither the "
                     "figure nor its change gets one.")
    return lines + ([""] if lines else [])


def elsewhere_section(analysis: Analysis, figures: bool) -> list[str]:
    """The selected models on the external sets and held-out sources, and where they look (Grad-CAM)."""
    from study.analysis.external import ALL_PRESENT, EXTERNAL_METRICS, EXTERNAL_TITLES

    internal = f"internal {analysis.split}"
    table = analysis.external
    lines = []
    if len(table):
        lines += ["## Elsewhere: held-out sources and external sets", ""]
        lines += [f"Each cell's model chosen on validation, evaluated once on every image of each set below, against "
                  f"its figures on the {internal} split. A model that learnt its sources rather than the lungs scores "
                  "well on a split of the same sources and drops on images from elsewhere. External sets rarely have "
                  "every class, so the figures are those that exist with partial classes: accuracy, and each present "
                  "class's recall and one-vs-rest ROC AUC; the means run over the classes present in both sets. "
                  "Intervals: 95%, patient bootstrap of each set (resampled independently); the change is "
                  "external − internal. Accuracy and a class's recall, proportions of images, get the exact binomial "
                  "interval over their patients (as in the per-class tables), and their change the two sides' "
                  "intervals combined (MOVER). `[no spread]`: the figure is the same in every resample, which "
                  "keeps each class's patients (why, below the tables); it and its change have no interval. "
                  "Accuracy moves with a set's class mix: the majority-class predictor's rows show how much of a "
                  "change the mix alone makes; the recall and AUC means do not depend on it.", ""]
        described = {(s.name, s.dataset): s for s in analysis.external_sets}  # one line per set at any image size
        by_image = sorted({s.name for s in described.values() if not s.patient_ids})
        if by_image:
            lines += [f"{joined_names(by_image)} {'has' if len(by_image) == 1 else 'have'} no patient ids: resampled "
                      "by image, so the same person's X-rays there (a set without patient ids can hold one person's "
                      "follow-ups under unrelated file names, as covid-radiography does) count as independent, and "
                      "the intervals are optimistic: narrower than over patients.", ""]
        lines += [f"- **{s.name}** ({s.description}): {s.summary().partition(': ')[2]}" for s in described.values()]
        lines.append("")
        summary = table[table["class"] == ALL_PRESENT]
        for (dataset, model, name), rows in summary.groupby(["dataset", "model", "set"], sort=False):
            by_metric = {row.metric: row for row in rows.itertuples(index=False)}
            parts = [f"{EXTERNAL_TITLES[m][0].lower()}{EXTERNAL_TITLES[m][1:]} {by_metric[m].internal:.3f} → "
                     f"{by_metric[m].external:.3f} "
                     f"({_change_words(by_metric[m])})" for m in EXTERNAL_METRICS if m in by_metric]
            lines.append(f"- {dataset} / {model} on {name}: " + "; ".join(parts))
        lines.append("")
        for metric in (*EXTERNAL_METRICS, "recall", "roc_auc"):
            shown = analysis.tables.get(f"_shown_external_{metric}")
            if shown is not None and len(shown):
                shown = marked_no_spread(shown, table[table["metric"] == metric], internal)
                lines += [f"### {EXTERNAL_TITLES[metric]}" + (" per class" if metric in ("recall", "roc_auc") else ""),
                          "", markdown_table(shown.rename(columns={"external": "on the set"})), ""]
        lines += no_spread_lines(table)
        lines += ["Every row, with its bounds, is in `tables/external_evaluation`.", ""]
    if analysis.saliency:
        lines += ["### Where the models look (Grad-CAM)" if len(table) else "## Where the models look (Grad-CAM)", ""]
        first = analysis.saliency[0]
        lines += [f"Grad-CAM (captum's LayerGradCam) of the predicted class on the last convolution (AlexNet, VGG11) "
                  f"or stage (ResNet50) whose grid is at least 4x4 (on small inputs one before the last), upsampled "
                  f"to the input and laid over it (warm: the regions that raised the predicted class's score), for "
                  f"{first.per_class} seeded image(s) per class of each set. Titles: true class → predicted class "
                  "(probability). Maps at this input size are coarse (the layer's grid is named under each figure); "
                  "weight on the image's borders, text or devices rather than the lungs is the shortcut to look for.",
                  ""]
        for panel in analysis.saliency:
            name = f"gradcam_{panel.slug}"
            if figures and name in analysis.figures:
                lines += [f"![Grad-CAM, {panel.dataset} / {panel.model}](figures/{name}.png)", "",
                          f"{panel.dataset} / {panel.model}: layer `{panel.layer}`, a {panel.grid} grid on "
                          f"{panel.image_size} px input.", ""]
    return lines
