"""The test split's ledger: each analysis's look recorded in the study, read back by the next."""

from __future__ import annotations

from pathlib import Path

from study.analysis.looks import LOOKS_DIR, Look, earlier_looks, history, record_look


def look(time: str, alexnet: str = "a1@3", top_k: int = 1) -> Look:
    return Look(time, "val/f1_macro", top_k, {"d / alexnet": [alexnet], "d / resnet50": ["r1@2"]})


def test_looks_are_read_back_oldest_first(tmp_path: Path) -> None:
    assert earlier_looks(str(tmp_path)) == ([], [])  # a study never analysed on test
    assert record_look(str(tmp_path), look("2026-12-03T10:00:02Z", "a2@4")) is None
    assert record_look(str(tmp_path), look("2026-12-03T09:00:00Z")) is None
    looks, problems = earlier_looks(str(tmp_path))
    assert [item.time for item in looks] == ["2026-12-03T09:00:00Z", "2026-12-03T10:00:02Z"] and problems == []
    assert looks[0] == look("2026-12-03T09:00:00Z")
    assert looks[0].same_models(look("later")) and not looks[1].same_models(look("later"))
    assert not look("x").same_models(look("x", alexnet="a1@4"))  # the same trial at another epoch: new figures


def test_seed_runs_added_to_the_same_selection_are_no_new_look(tmp_path: Path) -> None:
    # analyze, then study.confirm, then analyze again: the second look adds the seed runs of the chosen trials
    before = look("2026-12-03T09:00:00Z")
    after = look("2026-12-03T10:00:00Z")
    after.evaluated.update({"d / alexnet seeds": ["c_00000@4"], "d / resnet50 seeds": ["c_00001@2"]})
    record_look(str(tmp_path), before)
    record_look(str(tmp_path), after)
    looks, _ = earlier_looks(str(tmp_path))
    assert looks[1].evaluated["d / alexnet seeds"] == ["c_00000@4"]  # still recorded, still read back
    assert history(look("now"), looks).startswith("read by 2 earlier analyses of these same trials")
    assert "no new look" in history(after, [before])
    other = look("now", alexnet="a2@4")  # another selection, with or without seed runs, is a new look
    other.evaluated["d / alexnet seeds"] = ["c_00000@4"]
    assert history(other, looks).startswith("read before for other trials by 2 earlier analyses")


def test_earlier_analyses_of_the_same_trials_are_counted_as_analyses(tmp_path: Path) -> None:
    """Beside looks for other trials, the count of earlier looks at the same trials is of analyses, not trials."""
    other = look("2026-12-03T08:00:00Z", alexnet="a2@4")
    same = [look("2026-12-03T09:00:00Z"), look("2026-12-03T10:00:00Z")]
    assert ("read before for other trials by 1 earlier analysis (see Earlier looks at the test split), and by 2 "
            "earlier analyses of these same trials: a choice") in history(look("now"), [other, *same])
    assert ", and by 1 earlier analysis of these same trials: a choice" in history(look("now"), [other, same[0]])
    assert "these same trials" not in history(look("now"), [other])


def test_an_unreadable_record_is_named_and_the_others_kept(tmp_path: Path) -> None:
    record_look(str(tmp_path), look("2026-12-03T09:00:00Z"))
    (tmp_path / LOOKS_DIR / "cut.json").write_text('{"time": "2026')
    looks, problems = earlier_looks(str(tmp_path))
    assert len(looks) == 1 and len(problems) == 1 and "cut.json: unreadable record" in problems[0]


def test_a_look_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    (tmp_path / LOOKS_DIR).write_text("a file where the folder should be")
    problem = record_look(str(tmp_path), look("2026-12-03T09:00:00Z"))
    assert problem is not None and "could not be recorded" in problem and LOOKS_DIR in problem
