"""Search spaces: the shipped YAML files, conditional dimensions under Optuna, and malformed spaces.

No Ray here: the define-by-run function is driven by an Optuna study directly and by
Ray's OptunaSearch searcher (which needs no running Ray to suggest configs).
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from cxrnets.errors import CxrError
from study.space import SPACES_DIR, config_name, load_space, parse_space, trial_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

SGD_ONLY = ("momentum", "weight_decay")  # demo.yaml and paper.yaml: SGD's own hyperparameters


def sample_configs(space, trials: int, seed: int = 0) -> list[dict]:
    """Trial configs as a study sees them: Optuna's suggestions plus the space's constants.

    Each trial is told a made-up score, so that TPE leaves its random start-up phase and
    samples from its model of the (conditional) space too.
    """
    study = optuna.create_study(direction="maximize", sampler=space.make_sampler(seed, trials))
    configs = []
    for i in range(trials):
        trial = study.ask()
        constants = space(trial)
        config = {**trial_config(trial.params), **constants}
        configs.append(config)
        study.tell(trial, math.sin(i) + (0.5 if config.get("optimizer") == "sgd" else 0.0))
    return configs


# ------------------------------------------------------------------ shipped spaces

@pytest.mark.parametrize("name", ["demo", "paper", "wide"])
def test_shipped_spaces_parse(name):
    space = load_space(name)
    assert space.name == name
    assert Path(space.source) == SPACES_DIR / f"{name}.yaml"
    assert space.values_of("model") == ["alexnet", "vgg11", "resnet50"]
    assert set(space.values_of("optimizer")) == {"adam", "sgd"}
    assert [d.name for d in space.dimensions][:1] == ["model"]
    assert space.filled == {}  # every key a trial is named by is searched or set by the space itself
    # loading by file path gives the same space as loading by name
    assert load_space(SPACES_DIR / f"{name}.yaml").dimensions == space.dimensions
    assert load_space(f"{name}.yaml").dimensions == space.dimensions


def test_a_key_trials_are_named_by_that_the_space_leaves_out_is_fixed_at_the_training_default():
    """A space without model, optimizer or batch_size trained TrainConfig's defaults unrecorded: trials named
    ?_?_lr..._bs?, no model column in the tables. The keys left out are constants of the space now, so every
    trial's config (its name, the results, the tables) records them."""
    space = parse_space({"search": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}}})
    assert space.filled == {"model": "resnet50", "optimizer": "adam", "batch_size": 32}
    assert space.values_of("model") == ["resnet50"]
    [config] = sample_configs(space, 1)
    assert config.keys() == {"model", "optimizer", "lr", "batch_size"}
    assert re.fullmatch(r"resnet50_adam_lr\d\.\de-0[34]_bs32", config_name(config)), config_name(config)
    assert parse_space({"search": {"model": {"value": "vgg11"}}}).filled == {"optimizer": "adam", "lr": 1e-3,
                                                                              "batch_size": 32}


def test_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(CxrError, match="not found.*demo.*paper.*wide"):
        load_space("nonexistent-space")


def test_a_mistyped_path_is_not_taken_for_the_shipped_space_of_its_name(tmp_path):
    """--space /my/spaces/demo.yaml that does not exist ran the shipped demo space without a word."""
    with pytest.raises(CxrError, match=r"'.*/my-spaces/demo\.yaml': no such file; give a YAML file or one of demo"):
        load_space(str(tmp_path / "my-spaces" / "demo.yaml"))


def test_paper_grid_is_the_papers_108_combinations():
    space = load_space("paper")
    assert space.sampler == "grid"
    assert space.study["image_size"] == 224 and space.study["max_epochs"] == 50
    grid = space.grid()
    assert len(grid) == 108 == 3 * 3 * 3 * 2 * 2
    assert len({tuple(sorted(c.items())) for c in grid}) == 108, "the grid repeats a combination"
    assert {c["lr"] for c in grid} == {1e-4, 1e-2, 1e-1}
    assert {c["batch_size"] for c in grid} == {16, 32, 64}
    assert {c["pretrained"] for c in grid} == {True, False}
    sgd = [c for c in grid if c["optimizer"] == "sgd"]
    adam = [c for c in grid if c["optimizer"] == "adam"]
    assert len(sgd) == len(adam) == 54
    assert all(c["momentum"] == 0.9 and c["weight_decay"] == 0.5 for c in sgd)
    assert not any(key in c for c in adam for key in SGD_ONLY)
    # Optuna's GridSampler enumerates the same 108 points (the constants are not grid axes)
    assert math.prod(len(values) for values in space.optuna_grid().values()) == 108


def test_configurations_are_what_optuna_records_for_a_trial():
    """The searcher tells an untried configuration from the Optuna trials' params: constants (momentum,
    weight decay, fixed for SGD only) are not among them. A space with a range has none to list."""
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("paper")
    listed = space.configurations()
    searcher = OptunaSearch(space, metric="val/f1_macro", mode="max", sampler=space.make_sampler(0, 108))
    for i in range(108):
        searcher.suggest(f"trial-{i}")
    recorded = [trial.params for trial in searcher._ot_study.trials]
    assert len(listed) == 108 and sorted(map(str, listed)) == sorted(map(str, recorded))
    assert load_space("demo").configurations() is None


def test_configurations_are_counted_as_listed_without_listing_them():
    """A space of choices is counted, for the study's trial count and the searcher's end, without listing its
    configurations: listing a space of eight ten-way choices (10^8) took minutes and gigabytes."""
    conditional = parse_space({"search": {
        "optimizer": {"choice": ["adam", "sgd"]},
        "lr": {"choice": [1e-4, 1e-3, 1e-2]},
        "momentum": {"choice": [0.5, 0.9], "when": {"optimizer": "sgd"}},
        "weight_decay": [{"value": 0, "when": {"optimizer": "adam"}}, {"value": 1e-4, "when": {"optimizer": "sgd"}}],
        "batch_size": {"choice": [16, 32]}}})
    assert conditional.configuration_count() == len(conditional.configurations()) == (3 + 3 * 2) * 2
    assert load_space("paper").configuration_count() == 108
    assert load_space("demo").configuration_count() is None  # a range: nothing to count
    tenths = [i / 10 for i in range(10)]
    wide = parse_space({"search": {"lr": {"choice": [10.0 ** -i for i in range(1, 11)]},
                                   "batch_size": {"choice": list(range(2, 12))}, "momentum": {"choice": tenths},
                                   "weight_decay": {"choice": tenths}, "seed": {"choice": list(range(10))}}})
    assert wide.configuration_count() == 10 ** 5


def test_paper_grid_through_optuna_search_runs_every_combination_once():
    """Ray's OptunaSearch with the grid sampler proposes all 108 points before repeating one,
    even when every trial is still running (none has reported)."""
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("paper")
    searcher = OptunaSearch(space, metric="val/f1_macro", mode="max", sampler=space.make_sampler(0, 108),
                            study_name="paper-grid")
    configs = [searcher.suggest(f"trial-{i}") for i in range(108)]
    assert len({tuple(sorted(c.items())) for c in configs}) == 108
    for config in configs:
        if config["optimizer"] == "sgd":
            assert (config["momentum"], config["weight_decay"]) == (0.9, 0.5)
        else:
            assert not set(SGD_ONLY) & set(config)


# ------------------------------------------------------------------ conditional dimensions

@pytest.mark.parametrize("name", ["demo", "wide"])
def test_adam_trials_never_get_sgd_dimensions(name):
    space = load_space(name)
    configs = sample_configs(space, 40)
    adam = [c for c in configs if c["optimizer"] == "adam"]
    sgd = [c for c in configs if c["optimizer"] == "sgd"]
    assert len(adam) >= 5 and len(sgd) >= 5
    assert not any("momentum" in c for c in adam)
    assert all("momentum" in c for c in sgd)
    if name == "demo":  # weight decay is SGD's only in demo.yaml ...
        assert not any("weight_decay" in c for c in adam)
        assert all(c["momentum"] == 0.9 and c["weight_decay"] == 1e-4 for c in sgd)
    else:  # ... wide.yaml searches it for both optimizers over one range
        assert all(1e-6 <= c["weight_decay"] <= 1e-2 for c in configs)
        assert all(0.5 <= c["momentum"] <= 0.99 for c in sgd)
        assert all(1e-6 <= c["lr"] <= 1e-2 for c in adam) and all(1e-4 <= c["lr"] <= 1e-1 for c in sgd)
        assert {c["batch_size"] for c in configs} <= {8, 16, 32, 64, 128}


def ray_searcher_configs(space, trials: int, seed: int = 0, sampler=None) -> list[dict]:
    """Configs as a study of `trials` trials proposes them, the cover_first points enqueued first; `sampler`:
    another than the space's."""
    from study.searcher import BestEpochOptunaSearch

    searcher = BestEpochOptunaSearch(space, metric="val/f1_macro", mode="max",
                                     sampler=sampler or space.make_sampler(seed, trials),
                            points_to_evaluate=space.first_points() or None, study_name="cover")
    configs = []
    for i in range(trials):
        configs.append(searcher.suggest(f"trial-{i}"))
        searcher.on_trial_complete(f"trial-{i}", {"val/f1_macro": 0.3 + 0.01 * i, "training_iteration": 1})
    return configs


def test_conditional_dimensions_through_ray_optuna_search():
    """The path a study takes: its searcher (Ray's OptunaSearch) proposes configs from the define-by-run
    function and learns from completed trials; Adam configs never carry momentum or weight decay."""
    space = load_space("demo")
    configs = ray_searcher_configs(space, 24)  # past TPE's 10 random start-up trials
    assert {c["optimizer"] for c in configs} == {"adam", "sgd"}
    for config in configs:
        assert config["pretrained"] is False
        if config["optimizer"] == "adam":
            assert 2e-5 <= config["lr"] <= 2e-3
            assert not set(SGD_ONLY) & set(config), config
        else:
            assert 1e-3 <= config["lr"] <= 5e-2
            assert (config["momentum"], config["weight_decay"]) == (0.9, 1e-4), config


def test_cover_first_starts_with_every_model_and_optimizer():
    """demo.yaml: the first 6 trials are each model with Adam and with SGD, every other dimension drawn
    as usual (Adam and SGD learning rates from their own ranges); then TPE is free."""
    space = load_space("demo")
    configs = ray_searcher_configs(space, 12)
    first = [(c["model"], c["optimizer"]) for c in configs[:6]]
    assert first == [(m, o) for m in ("alexnet", "vgg11", "resnet50") for o in ("adam", "sgd")]
    for config in configs:
        assert (2e-5 <= config["lr"] <= 2e-3) if config["optimizer"] == "adam" else (1e-3 <= config["lr"] <= 5e-2)
        assert ("momentum" in config) == (config["optimizer"] == "sgd"), config
    assert len({c["lr"] for c in configs}) == 12
    without = parse_space({k: v for k, v in yaml.safe_load((SPACES_DIR / "demo.yaml").read_text()).items()
                           if k != "cover_first"})
    assert [(c["model"], c["optimizer"]) for c in ray_searcher_configs(without, 6)] != first


def test_tpe_models_the_demos_last_trials_once_its_covered_trials_finished():
    """Optuna's TPE draws its first 10 trials at random: the demo's 10 trials were those a RandomSampler of the
    same seed draws. The study's TPE draws at random until the 6 covered trials have finished, then models them."""
    space = load_space("demo")
    assert space.random_start_trials(10) == 6
    assert space.random_start_trials(4) == 4  # every trial covered
    assert space.random_start_trials(100) == 10  # Optuna's default, no more
    tpe = ray_searcher_configs(space, 10)
    random = ray_searcher_configs(space, 10, sampler=optuna.samplers.RandomSampler(seed=0))
    assert tpe[:6] == random[:6]
    assert all(modelled != drawn for modelled, drawn in zip(tpe[6:], random[6:]))


def test_cover_first_follows_conditions():
    """A covered choice that exists only for some trials is covered only in those."""
    space = parse_space({"cover_first": ["optimizer", "momentum"], "search": {
        "optimizer": {"choice": ["adam", "sgd"]}, "lr": {"loguniform": [1e-4, 1e-1]},
        "momentum": {"choice": [0.8, 0.9], "when": {"optimizer": "sgd"}}}})
    assert space.first_points() == [{"optimizer": "adam"}, {"optimizer": "sgd", "momentum": 0.8},
                                    {"optimizer": "sgd", "momentum": 0.9}]
    assert [{k: c[k] for k in ("optimizer", "momentum") if k in c} for c in ray_searcher_configs(space, 3)] \
        == space.first_points()


def test_same_seed_same_configs():
    space = load_space("wide")
    assert sample_configs(space, 12, seed=3) == sample_configs(space, 12, seed=3)
    assert sample_configs(space, 12, seed=3) != sample_configs(space, 12, seed=4)


def test_when_takes_a_list_of_values():
    space = parse_space({"search": {
        "optimizer": {"choice": ["adam", "sgd"]},
        "weight_decay": {"loguniform": [1e-6, 1e-2], "when": {"optimizer": ["sgd", "adam"]}},
        "momentum": {"uniform": [0.5, 0.99], "when": {"optimizer": "sgd"}},
    }})
    for config in sample_configs(space, 20):
        assert "weight_decay" in config
        assert ("momentum" in config) == (config["optimizer"] == "sgd")


def test_a_key_can_take_one_range_per_optimizer():
    """Adam and SGD trials draw their learning rates from their own ranges, and TPE learns each."""
    space = parse_space({"search": {
        "optimizer": {"choice": ["adam", "sgd"]},
        "lr": [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}},
               {"loguniform": [1e-3, 1e-1], "when": {"optimizer": "sgd"}}],
    }})
    configs = sample_configs(space, 40)
    adam = [c["lr"] for c in configs if c["optimizer"] == "adam"]
    sgd = [c["lr"] for c in configs if c["optimizer"] == "sgd"]
    assert len(adam) >= 5 and len(sgd) >= 5
    assert all(1e-5 <= lr <= 1e-3 for lr in adam)
    assert all(1e-3 <= lr <= 1e-1 for lr in sgd)


LR_PER_OPTIMIZER = {"search": {
    "optimizer": {"choice": ["adam", "sgd"]},
    "lr": [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}},
           {"loguniform": [1e-3, 1e-1], "when": {"optimizer": "sgd"}}],
}}


def test_each_alternative_is_its_own_optuna_parameter_and_the_trial_config_holds_its_key():
    """optuna.db (and Optuna's dashboard) show Adam's learning rates as lr|optimizer=adam, SGD's as
    lr|optimizer=sgd; the trial trains, and the results record, lr."""
    space = parse_space(LR_PER_OPTIMIZER)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for optimizer in ("adam", "sgd"):
        study.enqueue_trial({"optimizer": optimizer})
        trial = study.ask()
        space(trial)
        assert set(trial.params) == {"optimizer", f"lr|optimizer={optimizer}"}
        assert set(trial_config(trial.params)) == {"optimizer", "lr"}
    two_conditions = parse_space({"search": {**LR_PER_OPTIMIZER["search"], "batch_size": {"choice": [16, 32]},
                                             "momentum": [{"uniform": [0.5, 0.9],
                                                           "when": {"optimizer": "sgd", "batch_size": [16, 32]}}]}})
    assert two_conditions.dimensions[-1].optuna_name == "momentum|optimizer=sgd|batch_size=16,32"


def test_tpe_draws_an_alternatives_values_from_its_own_trials_results():
    """Adam does best at the top of its range, 1e-3, SGD at the top of its own, 1e-1. Under one Optuna name,
    TPE drew SGD's learning rates next to Adam's best (the median of SGD's last 10 was 10**-2.7)."""
    space = parse_space(LR_PER_OPTIMIZER)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    sgd_rates = []
    for optimizer in ["adam"] * 20 + ["sgd"] * 20:
        study.enqueue_trial({"optimizer": optimizer})
        trial = study.ask()
        config = {**space(trial), **trial_config(trial.params)}
        best, score = (-3, 0.9) if optimizer == "adam" else (-1, 0.5)
        study.tell(trial, score - abs(math.log10(config["lr"]) - best) / 4)
        if optimizer == "sgd":
            sgd_rates.append(math.log10(config["lr"]))
    assert statistics.median(sgd_rates[10:]) > -2.4


def test_first_matching_alternative_wins():
    space = parse_space({"search": {
        "optimizer": {"choice": ["adam", "sgd"]},
        "lr": [{"value": 0.5, "when": {"optimizer": "sgd"}},
               {"value": 0.001, "when": {"optimizer": ["adam", "sgd"]}}],
    }})
    for config in sample_configs(space, 10):
        assert config["lr"] == (0.5 if config["optimizer"] == "sgd" else 0.001)


SHADOWED = {
    "by one alternative": (
        [{"loguniform": [1e-4, 1e-3], "when": {"optimizer": ["adam", "sgd"]}},
         {"loguniform": [1e-2, 1e-1], "when": {"optimizer": "sgd"}}],
        "search.lr[1] (when optimizer: sgd) is never drawn: a trial draws from the first alternative that holds, "
        "and search.lr[0] holds for every trial search.lr[1] is for; narrow its when, move search.lr[1] before it, "
        "or drop search.lr[1]"),
    "by two together": (
        [{"value": 0.001, "when": {"optimizer": "adam"}}, {"value": 0.01, "when": {"optimizer": "sgd"}},
         {"value": 0.1, "when": {"optimizer": ["adam", "sgd"]}}],
        "search.lr[2] (when optimizer: adam, sgd) is never drawn: a trial draws from the first alternative that "
        "holds, and search.lr[0] and search.lr[1] hold for every trial search.lr[2] is for; narrow their when, move "
        "search.lr[2] before them, or drop search.lr[2]"),
    "by a condition on another key": (
        [{"value": 0.001, "when": {"model": "resnet50"}}, {"value": 0.01, "when": {"optimizer": "sgd"}}],
        "search.lr[1] (when optimizer: sgd) is never drawn: a trial draws from the first alternative that holds, "
        "and search.lr[0] holds for every trial search.lr[1] is for"),
}


@pytest.mark.parametrize("lr, message", SHADOWED.values(), ids=SHADOWED.keys())
def test_an_alternative_earlier_ones_hold_for_wherever_it_does_is_refused(tmp_path, lr, message):
    """The first alternative that holds is drawn from: SGD's range after one for Adam and SGD was never used,
    without a word. A study that ran with such a space still resumes and analyses."""
    path = write_space(tmp_path, {"lr": lr})
    with pytest.raises(CxrError, match=re.escape(f"{path}: {message}")):
        load_space(path)
    parse_space(yaml.safe_load(path.read_text()))


def test_alternatives_each_drawn_by_some_trial_load(tmp_path):
    """SGD's constant before a range for both: Adam trials draw the range. An alternative of another dataset
    than --dataset's holds for no trial, and shadows nothing; nor does one for them all, which is checked in the
    whole space."""
    lr = [{"value": 0.5, "when": {"optimizer": "sgd"}},
          {"loguniform": [1e-4, 1e-3], "when": {"optimizer": ["adam", "sgd"]}}]
    assert len(load_space(write_space(tmp_path, {"lr": lr})).dimensions) == 5
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump({"search": {
        "dataset": {"choice": ["covid-chestxray", "covid-chestxray-3class"]}, **GOOD,
        "lr": [{"value": 0.01, "when": {"dataset": "covid-chestxray"}},
               {"value": 0.001, "when": {"dataset": "covid-chestxray-3class"}}]}}, sort_keys=False))
    assert load_space(path, "covid-chestxray-3class").grid()[0]["lr"] == 0.001
    # Adam's of covid-chestxray before Adam's of any dataset: --dataset covid-chestxray's Adam trials draw from the
    # first only, yet the second is what covid-chestxray-3class's draw from
    path.write_text(yaml.safe_dump({"search": {
        "dataset": {"choice": ["covid-chestxray", "covid-chestxray-3class"]}, **GOOD,
        "lr": [{"value": 0.01, "when": {"dataset": "covid-chestxray", "optimizer": "adam"}},
               {"value": 0.001, "when": {"optimizer": "adam"}},
               {"value": 0.1, "when": {"optimizer": "sgd"}}]}}, sort_keys=False))
    assert {config["lr"] for config in load_space(path, "covid-chestxray").grid()} == {0.01, 0.1}
    assert {config["lr"] for config in load_space(path, "covid-chestxray-3class").grid()} == {0.001, 0.1}


# ------------------------------------------------------------------ malformed spaces

GOOD = {"model": {"choice": ["resnet50"]}, "optimizer": {"choice": ["adam", "sgd"]},
        "lr": {"loguniform": [1e-4, 1e-1]}}

MALFORMED = {
    "unknown dimension": ({"search": {**GOOD, "learning_rate": {"loguniform": [1e-4, 1e-1]}}},
                          r"search\.learning_rate: unknown dimension 'learning_rate'"),
    "low >= high": ({"search": {**GOOD, "lr": {"loguniform": [0.1, 0.01]}}},
                    r"search\.lr\.loguniform: low 0\.1 must be below high 0\.01"),
    "low == high": ({"search": {**GOOD, "momentum": {"uniform": [0.9, 0.9]}}},
                    r"search\.momentum\.uniform: low 0\.9 must be below high 0\.9"),
    "loguniform low <= 0": ({"search": {**GOOD, "lr": {"loguniform": [0, 0.1]}}},
                            r"search\.lr\.loguniform: a log scale needs low > 0"),
    "log int low <= 0": ({"search": {**GOOD, "batch_size": {"int": [0, 64], "log": True}}},
                         r"search\.batch_size"),
    "range not two numbers": ({"search": {**GOOD, "lr": {"uniform": [0.1]}}},
                              r"search\.lr\.uniform: must be \[low, high\] numbers"),
    "empty choice": ({"search": {**GOOD, "batch_size": {"choice": []}}},
                     r"search\.batch_size\.choice: must be a non-empty list"),
    "unknown model": ({"search": {**GOOD, "model": {"choice": ["alexnet", "resnet18"]}}},
                      r"search\.model: unknown model 'resnet18'; choose from alexnet, vgg11, resnet50"),
    "unknown optimizer": ({"search": {**GOOD, "optimizer": {"choice": ["adam", "rmsprop"]}}},
                          r"search\.optimizer: unknown optimizer 'rmsprop'"),
    "unknown dataset": ({"search": {"dataset": {"value": "mnist"}, **GOOD}},
                        r"search\.dataset: unknown dataset 'mnist'"),
    "when on a later dimension": (
        {"search": {"model": {"choice": ["resnet50"]}, "momentum": {"value": 0.9, "when": {"optimizer": "sgd"}},
                    "optimizer": {"choice": ["adam", "sgd"]}}},
        r"search\.momentum\.when: 'optimizer' must be a dimension listed before 'momentum'"),
    "when on an unknown dimension": (
        {"search": {**GOOD, "momentum": {"value": 0.9, "when": {"scheduler": "cosine"}}}},
        r"search\.momentum\.when: 'scheduler' must be a dimension listed before 'momentum'"),
    "two kinds in one dimension": ({"search": {**GOOD, "lr": {"choice": [0.1], "uniform": [0.1, 0.2]}}},
                                   r"search\.lr: give exactly one of"),
    "grid with a continuous range": ({"sampler": "grid", "search": GOOD},
                                     r"grid sampler needs choice or value dimensions; \['lr'\] are ranges"),
    "unknown sampler": ({"sampler": "bayes", "search": GOOD}, r"sampler 'bayes' is not one of tpe, random, grid"),
    "unknown top-level key": ({"serach": GOOD}, r"unknown top-level key\(s\) \['serach'\]"),
    "no search section": ({"study": {"image_size": 64}}, r"'search' must map dimension names"),
    "negative learning rate": ({"search": {**GOOD, "lr": {"choice": [0.01, -0.1]}}},
                               r"search\.lr: lr must be positive"),
    "momentum of 1": ({"search": {**GOOD, "momentum": {"uniform": [0.5, 1.0]}}},
                      r"search\.momentum: momentum must be below 1 \(SGD.s velocity would never decay\), got 1\.0"),
    "fractional batch size": ({"search": {**GOOD, "batch_size": {"choice": [16, 32.5]}}},
                              r"search\.batch_size: batch_size must be an integer"),
    "batch size of one": ({"search": {**GOOD, "batch_size": {"int": [1, 64]}}},
                          r"search\.batch_size: batch_size must be at least 2 \(a training batch of one image "
                          r"is skipped"),
    "alternative without when": (
        {"search": {**GOOD, "lr": [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}},
                                   {"loguniform": [1e-3, 1e-1]}]}},
        r"search\.lr\[1\]: each alternative needs a 'when'"),
    "alternatives on two scales": (
        {"search": {**GOOD, "lr": [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}},
                                   {"uniform": [1e-3, 1e-1], "when": {"optimizer": "sgd"}}]}},
        r"search\.lr: alternatives must be ranges of one kind"),
    "empty alternatives": ({"search": {**GOOD, "lr": []}}, r"search\.lr: an empty list"),
    "when naming no value": (  # SGD trained momentum 0.9 unrecorded, an empty HPARAMS column
        {"search": {**GOOD, "momentum": {"uniform": [0.0, 0.5], "when": {"optimizer": []}}}},
        r"search\.momentum\.when: optimizer: \[\] names no value, so momentum would apply to no trial; give the "
        r"optimizer value\(s\) it is for, or drop the condition"),
    "bad range in an alternative": (
        {"search": {**GOOD, "lr": [{"loguniform": [1e-3, 1e-5], "when": {"optimizer": "adam"}}]}},
        r"search\.lr\[0\]\.loguniform: low 0\.001 must be below high 1e-05"),
    "cover_first an unknown dimension": ({"cover_first": ["model", "optimiser"], "search": GOOD},
                                         r"cover_first: 'optimiser' is not a dimension of the space"),
    "cover_first a range": ({"cover_first": ["lr"], "search": GOOD},
                            r"cover_first: 'lr' is a loguniform range, not a choice"),
    "cover_first not a list": ({"cover_first": "model", "search": GOOD},
                               r"cover_first: must be a list of choice dimensions"),
    "cover_first with the grid sampler": (
        {"sampler": "grid", "cover_first": ["model"], "search": {**GOOD, "lr": {"choice": [0.1]}}},
        r"cover_first: the grid sampler already tries every combination"),
    "cover_first a conditional dimension alone": (
        {"cover_first": ["momentum"], "search": {**GOOD, "momentum": {"choice": [0.8, 0.9],
                                                                      "when": {"optimizer": "sgd"}}}},
        r"cover_first: 'momentum' depends on \['optimizer'\], which must be covered too"),
    "seed beyond the largest": ({"search": {**GOOD, "seed": {"value": 4294967296}}},
                                r"search\.seed: seed 4294967296: a seed is a whole number from 0 to 2147483647"),
    "seed range beyond the largest": ({"search": {**GOOD, "seed": {"int": [0, 2**31]}}},
                                      r"search\.seed: seed 2147483648: a seed is a whole number from 0 to 2147483647"),
    "pretrained not a boolean": ({"search": {**GOOD, "pretrained": {"choice": ["yes", "no"]}}},
                                 r"search\.pretrained: pretrained takes true or false"),
}


@pytest.mark.parametrize("document, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_space_fails_naming_the_key(document, message):
    with pytest.raises(CxrError, match=message):
        parse_space(document, "bad.yaml")


def test_malformed_space_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"search": {"model": {"choice": ["resnet50"]}, "batchsize": {"choice": [16]}}}))
    with pytest.raises(CxrError, match=rf"{path}: search\.batchsize: unknown dimension 'batchsize'; "
                                       r"searchable keys are dataset, model"):
        load_space(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("search:\n  model: {choice: [resnet50\n")
    with pytest.raises(CxrError, match=rf"{path}: not valid YAML"):
        load_space(path)


REFUSED_FILES = {
    # An accented comment saved as latin-1, or a file a Windows editor saved as UTF-16.
    "latin-1": ("search:\n  model: {choice: [resnet50]}  # réseau\n".encode("latin-1"),
                "not UTF-8 (line 2 has the byte 0xe9: the file was saved in another encoding, such as latin-1 or "
                "UTF-16); save it as UTF-8"),
    "utf-16": ("search:\n  model: {choice: [resnet50]}  # réseau\n".encode("utf-16"),
               "not UTF-8 (line 1 has the byte 0xff: the file was saved in another encoding, such as latin-1 or "
               "UTF-16); save it as UTF-8"),
    # YAML keeps the last of two `lr:` entries silently: the study would search a range the user did not mean.
    "a dimension twice": (b"search:\n  model: {choice: [resnet50]}\n  lr: {loguniform: [1.0e-4, 1.0e-1]}\n"
                          b"  lr: {loguniform: [1.0e-3, 1.0e-2]}\n",
                          "'lr' is given twice, on lines 3 and 4; YAML would keep only the last: remove or rename one"),
    "a section twice": (b"study:\n  image_size: 64\nsearch:\n  model: {choice: [resnet50]}\nstudy:\n  image_size: 32\n",
                        "'study' is given twice, on lines 1 and 5; YAML would keep only the last: remove or rename "
                        "one"),
    "a kind twice in a flow mapping": (b"search:\n  model: {choice: [resnet50]}\n"
                                       b"  lr: {loguniform: [1.0e-4, 1.0e-1],\n       loguniform: [1.0e-3, 1.0e-2]}\n",
                                       "'loguniform' is given twice, on lines 3 and 4; YAML would keep only the last: "
                                       "remove or rename one"),
}


@pytest.mark.parametrize("content, message", REFUSED_FILES.values(), ids=REFUSED_FILES.keys())
def test_a_space_file_not_in_utf8_or_giving_a_key_twice_is_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(CxrError, match=re.escape(f"{path}: {message}")):
        load_space(path)


def test_a_space_file_with_a_utf8_byte_order_mark_loads(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  model: {choice: [resnet50]}  # réseau\n", encoding="utf-8-sig")
    assert load_space(path).values_of("model") == ["resnet50"]


def test_a_merge_key_may_be_overridden(tmp_path):
    """`<<: *anchor` then a key of the anchor's mapping is YAML's way to override it, not a key given twice."""
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  model: {choice: [resnet50]}\n  optimizer: {choice: [adam, sgd]}\n"
                    "  momentum: &sgd_only {uniform: [0.5, 0.99], when: {optimizer: sgd}}\n"
                    "  weight_decay: {<<: *sgd_only, uniform: [0.0, 0.01]}\n")
    weight_decay = load_space(path).dimensions[-1]
    assert (weight_decay.args, weight_decay.when) == ((0.0, 0.01), {"optimizer": ("sgd",)})


YAML_NUMBER = "(YAML reads a number with an exponent as text unless it has a dot and a signed exponent)"


@pytest.mark.parametrize("typed, said", [
    ("lr: {loguniform: [1e-4, 1e-2]}",
     f"search.lr.loguniform: must be [low, high] numbers, got ['1e-4', '1e-2']; write [1.0e-4, 1.0e-2] {YAML_NUMBER}"),
    ("lr: {uniform: [0.0001, 1.0e-2], when: {optimizer: sgd}}\n  weight_decay: {loguniform: [1.0e-6, 1.0e2]}",
     f"search.weight_decay.loguniform: must be [low, high] numbers, got [1e-06, '1.0e2']; write [1.0e-06, 1.0e+2] "
     f"{YAML_NUMBER}"),
    ("lr: {choice: [1.0e-3, 5E-3]}", f"search.lr: lr takes numbers, got '5E-3'; write 5.0E-3 {YAML_NUMBER}"),
    ("batch_size: {value: 3e1}", f"search.batch_size: batch_size takes numbers, got '3e1'; write 30 {YAML_NUMBER}"),
    ("lr: {choice: [1.0e-3, 1.0e-2]}\n  momentum: {value: 0.9, when: {lr: 1e-3}}",
     "search.momentum.when: lr never takes '1e-3', so the condition would never hold; choose from 0.001, 0.01; "
     f"write 1.0e-3 {YAML_NUMBER}"),
])
def test_a_number_yaml_reads_as_text_is_refused_saying_how_to_write_it(tmp_path, typed, said):
    """YAML 1.1 reads 1e-4 (no dot) and 1.0e2 (no sign in the exponent) as strings: a user who typed numbers was
    told they were not numbers."""
    path = tmp_path / "space.yaml"
    path.write_text(f"search:\n  model: {{value: resnet50}}\n  optimizer: {{choice: [adam, sgd]}}\n  {typed}\n")
    with pytest.raises(CxrError) as refused:
        load_space(path)
    assert str(refused.value) == f"{path}: {said}"



@pytest.mark.parametrize("line, said", [
    ("model: {choice: [resnet50, vgg11, resnet50]}", "search.model.choice: 'resnet50' is given twice (items 1 and 3)"),
    ("lr: {choice: [0.001, 1.0e-3]}", "search.lr.choice: 0.001 is given twice (items 1 and 2)"),
    ("momentum: {choice: [0.9, 0, 0.0], when: {optimizer: sgd}}",
     "search.momentum.choice: 0 and 0.0 are the same number (items 2 and 3)"),
])
def test_a_choice_giving_a_value_twice_is_refused(tmp_path, line, said):
    """A repeated value counted twice: a grid of 2 distinct configurations said '12 to start', cover_first
    tried combinations twice, and the samplers drew the value twice as often."""
    path = tmp_path / "space.yaml"
    path.write_text(f"search:\n  optimizer: {{choice: [adam, sgd]}}\n  {line}\n")
    with pytest.raises(CxrError) as refused:
        load_space(path)
    assert str(refused.value) == (f"{path}: {said}: a value given twice counts twice in the grid, in cover_first "
                                  "and in the sampler's draws; give each value once")



@pytest.mark.parametrize("line, instead", [
    ("model: [alexnet, vgg11]", "model: {choice: [alexnet, vgg11]}"),
    ("lr: [1.0e-4, 1.0e-2]", "lr: {choice: [0.0001, 0.01]}"),
])
def test_a_list_of_plain_values_says_to_write_a_choice(tmp_path, line, instead):
    """`model: [alexnet, vgg11]`, choice: forgotten, was refused as 'search.model[0]: each alternative needs
    a when', which said nothing of the choice that was meant."""
    path = tmp_path / "space.yaml"
    path.write_text(f"search:\n  {line}\n")
    with pytest.raises(CxrError) as refused:
        load_space(path)
    key = line.split(":")[0]
    assert str(refused.value) == (f"{path}: search.{key}: a list of values; to search over them, write {instead} "
                                  "(a list under a key is of ranges, each with its own 'when')")


def write_space(tmp_path: Path, search: dict) -> Path:
    """A space file of GOOD's dimensions plus `search` (in order: a `when` names earlier dimensions)."""
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"search": {**GOOD, **search}}, sort_keys=False))
    return path


@pytest.mark.parametrize("key, spec, instead", [
    ("batch_size", {"uniform": [16, 64]}, "{int: [16, 64]}"),
    ("seed", {"loguniform": [1, 1000]}, "{int: [1, 1000], log: true}"),
    ("image_size", {"uniform": [64.0, 224.5]}, "{int: [64, 224]}"),
])
def test_a_whole_number_key_refuses_a_float_range(tmp_path, key, spec, instead):
    """Every trial would draw a fraction (batch_size 42.34) and fail in TrainConfig.validate."""
    path = write_space(tmp_path, {key: spec})
    kind = next(iter(spec))
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.{key}.{kind}: {key} is a whole number, but a {kind} range draws fractions "
            f"(such as 42.34); use {instead}")):
        load_space(path)
    suggested = yaml.safe_load(instead)
    configs = sample_configs(parse_space({"search": {**GOOD, key: suggested}}), 5)
    assert all(isinstance(config[key], int) for config in configs)


def test_log_is_refused_where_it_would_be_ignored(tmp_path):
    """A uniform range is drawn linearly whatever `log` says: the space file says loguniform instead."""
    path = write_space(tmp_path, {"momentum": {"uniform": [0.5, 0.99], "log": True}})
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.momentum.log: only int and loguniform ranges take log: true; "
            "use loguniform: [low, high] instead")):
        load_space(path)
    path = write_space(tmp_path, {"lr": {"choice": [0.01, 0.1], "log": True}})
    with pytest.raises(CxrError, match=re.escape(f"{path}: search.lr.log: only int and loguniform ranges take "
                                                 "log: true; a choice has no scale: drop log")):
        load_space(path)
    path = write_space(tmp_path, {"batch_size": {"int": [8, 128], "log": "no"}})
    with pytest.raises(CxrError, match=re.escape(f"{path}: search.batch_size.log: takes true or false, got 'no'")):
        load_space(path)
    batch_size = parse_space({"search": {**GOOD, "batch_size": {"int": [8, 128], "log": True}}}).dimensions[-1]
    assert batch_size.distribution() == optuna.distributions.IntDistribution(8, 128, log=True)


@pytest.mark.parametrize("condition, values, takes", [
    ({"optimizer": "SGD"}, "'SGD'", "'adam', 'sgd'"),
    ({"optimizer": ["sgd", "Adam"]}, "'Adam'", "'adam', 'sgd'"),
    ({"batch_size": 48}, "48", "16, 32"),
    ({"seed": 12}, "12", "int [1, 10]"),
])
def test_a_condition_on_a_value_its_dimension_never_takes_is_refused(tmp_path, condition, values, takes):
    """`when: {optimizer: SGD}` never holds (the optimizer is sgd): momentum would silently keep its default."""
    path = write_space(tmp_path, {"batch_size": {"choice": [16, 32]}, "seed": {"int": [1, 10]},
                                  "momentum": {"uniform": [0.5, 0.99], "when": condition}})
    key = next(iter(condition))
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.momentum.when: {key} never takes {values}, so the condition would never hold; "
            f"choose from {takes}")):
        load_space(path)


@pytest.mark.parametrize("condition", [{"lr": 0.01}, {"lr": [0.01, 0.05]}, {"weight_decay": 0.1}])
def test_a_condition_on_a_float_range_is_refused(tmp_path, condition):
    """A loguniform lr of [1e-4, 0.1] holds 0.01, but a drawn lr is almost never 0.01 exactly: momentum, which
    only trials with that lr would draw, would never be searched."""
    path = write_space(tmp_path, {"weight_decay": {"loguniform": [1e-6, 1e-2]},
                                  "momentum": {"uniform": [0.5, 0.99], "when": condition}})
    key = next(iter(condition))
    value = condition[key][0] if isinstance(condition[key], list) else condition[key]
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.momentum.when: {key} is a loguniform range, whose drawn floats almost never equal "
            f"{value!r}, so the condition would almost never hold; a when can name a choice, an int range or a "
            f"value: make {key} a choice to condition on it")):
        load_space(path)


def test_a_condition_on_an_alternatives_constant_holds_where_the_constant_applies():
    """lr is a constant for SGD and a range for Adam: `when: {lr: 0.01}` is SGD's trials."""
    space = parse_space({"search": {**GOOD, "lr": [{"value": 0.01, "when": {"optimizer": "sgd"}},
                                                   {"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}}],
                                    "momentum": {"uniform": [0.5, 0.99], "when": {"lr": 0.01}}}})
    configs = sample_configs(space, 20)
    assert {"momentum" in config for config in configs if config["optimizer"] == "sgd"} == {True}
    assert {"momentum" in config for config in configs if config["optimizer"] == "adam"} == {False}


def test_a_condition_on_a_dataset_the_command_line_left_out_still_parses():
    """study.run --dataset replaces a space's dataset choice by that one dataset: the space's conditions
    on its other datasets then never hold, and that is no mistake. A name no dataset has still is."""
    def narrowed(other: str) -> dict:
        return {"search": {"dataset": {"value": "covid-radiography"}, **GOOD,
                           "lr": [{"loguniform": [1e-4, 1e-2], "when": {"dataset": "covid-radiography"}},
                                  {"loguniform": [1e-3, 1e-1], "when": {"dataset": other}}]}}

    assert len(parse_space(narrowed("covid-pneumonia-normal")).dimensions) == 6  # batch_size: GOOD leaves it out
    with pytest.raises(CxrError, match=re.escape(
            "bad.yaml: search.lr[1].when: dataset never takes 'covid-pneumonia', so the condition would never hold; "
            "choose from 'covid-radiography'")):
        parse_space(narrowed("covid-pneumonia"), "bad.yaml")


def test_a_condition_on_a_dataset_the_space_never_takes_is_refused_unless_dataset_narrows_it(tmp_path):
    """A real dataset's name the space's dataset choice leaves out was accepted silently, its condition never
    holding. With --dataset, the space is narrowed to one dataset, which may be the one the condition names."""
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"search": {
        "dataset": {"choice": ["covid-chestxray", "covid-chestxray-3class"]}, **GOOD,
        "lr": [{"value": 0.01, "when": {"dataset": "covid-radiography"}},
               {"value": 0.001, "when": {"dataset": ["covid-chestxray", "covid-chestxray-3class"]}}]}}, sort_keys=False))
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.lr[0].when: dataset never takes 'covid-radiography', so the condition would never "
            "hold; choose from 'covid-chestxray', 'covid-chestxray-3class'")):
        load_space(path)
    assert load_space(path, "covid-radiography").grid()[0]["lr"] == 0.01
    assert load_space(path, "covid-chestxray").grid()[0]["lr"] == 0.001


UNSET_FOR_SOME_TRIALS = {
    "lr for adam only": ({"lr": [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}}]},
                         "lr", "optimizer 'sgd'", "0.001"),
    "batch_size for one model": ({"model": {"choice": ["resnet50", "vgg11"]},
                                  "batch_size": {"value": 16, "when": {"model": "resnet50"}}},
                                 "batch_size", "model 'vgg11'", "32"),
    "lr for a momentum only sgd has": ({"momentum": {"choice": [0.9], "when": {"optimizer": "sgd"}},
                                        "lr": {"value": 0.01, "when": {"momentum": 0.9}}},
                                       "lr", "optimizer 'adam'", "0.001"),
    "lr for one batch size of a range": ({"batch_size": {"int": [8, 64]},
                                          "lr": {"value": 0.01, "when": {"batch_size": 16}}},
                                         "lr", "batch_size other than 16 of int [8, 64]", "0.001"),
}


@pytest.mark.parametrize("search, key, trials, default", UNSET_FOR_SOME_TRIALS.values(),
                         ids=UNSET_FOR_SOME_TRIALS.keys())
def test_a_key_trials_are_named_by_that_some_trials_would_not_get_is_refused(tmp_path, search, key, trials, default):
    """lr given for Adam only: SGD trials trained the default lr unrecorded, named lr0.0e+00 (bs? for a batch
    size), and the results held no lr. A space file a study starts from is refused, naming who is left out;
    the space of a study that ran with it still parses (its resume and analysis read it)."""
    path = tmp_path / "space.yaml"  # GOOD's dimensions that `search` leaves out, then `search`, in its order
    path.write_text(yaml.safe_dump({"search": {**{k: v for k, v in GOOD.items() if k not in search}, **search}},
                                   sort_keys=False))
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.{key}: no when of {key} holds for trials with {trials}: they would train cxrnets' "
            f"default {key} {default} unrecorded (their names and results show no {key}); add an alternative "
            f"whose when holds for them, or give {key} a range or value without when")):
        load_space(path)
    parse_space(yaml.safe_load(path.read_text()))


def test_a_key_trials_are_named_by_given_for_every_trial_by_its_alternatives_loads(tmp_path):
    lr = [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}},
          {"value": 0.01, "when": {"optimizer": ["sgd"]}}]
    assert len(load_space(write_space(tmp_path, {"lr": lr})).dimensions) == 5


@pytest.mark.parametrize("search, trials", [
    ({"momentum": {"uniform": [0.5, 0.99]}}, "optimizer 'adam'"),
    ({"optimizer": {"value": "adam"}, "momentum": {"value": 0.0}}, "optimizer 'adam'"),
    ({"momentum": {"value": 0.5, "when": {"model": "resnet50"}}}, "model 'resnet50', optimizer 'adam'"),
])
def test_a_momentum_that_trials_of_another_optimizer_than_sgd_get_is_refused(tmp_path, search, trials):
    """Adam ignores momentum: its trials would record a momentum that did nothing (and TrainConfig refuses one
    other than its default)."""
    path = write_space(tmp_path, search)
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.momentum: trials with {trials} get a momentum, which only SGD uses: adam would ignore "
            "it; add when: {optimizer: sgd} to momentum")):
        load_space(path)
    parse_space(yaml.safe_load(path.read_text()))  # a study that ran with it still resumes and analyses


def test_an_image_size_range_must_fit_every_model(tmp_path):
    """The range's low end is a trial's image size too: alexnet cannot take 29 px, nor 32 of a choice, whichever
    of model and image_size comes first."""
    path = write_space(tmp_path, {"model": {"choice": ["resnet50", "alexnet"]}, "image_size": {"int": [29, 128]}})
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.image_size: image_size 29 is too small for alexnet (needs at least 63 px); "
            "raise it to 63 or more, or drop alexnet")):
        load_space(path)
    path = write_space(tmp_path, {"image_size": {"choice": [32, 64]}, "model": {"choice": ["alexnet"]}})
    with pytest.raises(CxrError, match=re.escape(f"{path}: search.image_size: image_size 32 is too small for alexnet")):
        load_space(path)
    fits = parse_space({"search": {**GOOD, "model": {"choice": ["alexnet"]}, "image_size": {"int": [63, 128]}}})
    assert fits.dimensions[-1].args == (63, 128)


SIZES_PER_MODEL = {
    "a size per model": [{"value": 32, "when": {"model": "resnet50"}}, {"value": 64, "when": {"model": "alexnet"}}],
    "a range per model": [{"int": [32, 48], "when": {"model": "resnet50"}},
                          {"int": [64, 96], "when": {"model": "alexnet"}}],
}


@pytest.mark.parametrize("sizes", SIZES_PER_MODEL.values(), ids=SIZES_PER_MODEL.keys())
def test_an_image_size_per_model_is_checked_against_its_own_model(tmp_path, sizes):
    """resnet50 at 32 px, alexnet at 64: alexnet never gets 32 px, so the space loads; paired the other way
    round, the alternative giving alexnet its size is named."""
    path = write_space(tmp_path, {"model": {"choice": ["alexnet", "resnet50"]}, "image_size": sizes})
    assert load_space(path).values_of("model") == ["alexnet", "resnet50"]
    swapped = [{**sizes[0], "when": sizes[1]["when"]}, {**sizes[1], "when": sizes[0]["when"]}]
    path = write_space(tmp_path, {"model": {"choice": ["alexnet", "resnet50"]}, "image_size": swapped})
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: search.image_size[0]: image_size 32 is too small for alexnet (needs at least 63 px); "
            "raise it to 63 or more, or drop alexnet")):
        load_space(path)


def test_an_image_size_is_checked_against_the_models_of_the_dataset_dataset_narrows_to(tmp_path):
    """alexnet trains on covid-chestxray only: with --dataset covid-chestxray-3class no trial runs it at 32 px."""
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"search": {
        "dataset": {"choice": ["covid-chestxray-3class", "covid-chestxray"]},
        "model": [{"value": "alexnet", "when": {"dataset": "covid-chestxray"}},
                  {"value": "resnet50", "when": {"dataset": "covid-chestxray-3class"}}],
        "image_size": {"value": 32}, "optimizer": {"value": "adam"}, "lr": {"value": 1e-3}}}, sort_keys=False))
    assert load_space(path, "covid-chestxray-3class").values_of("image_size") == [32]
    with pytest.raises(CxrError, match=re.escape(f"{path}: search.image_size: image_size 32 is too small for alexnet")):
        load_space(path)
    with pytest.raises(CxrError, match=re.escape(f"{path}: search.image_size: image_size 32 is too small for alexnet")):
        load_space(path, "covid-chestxray")


def test_the_keys_a_space_searches_are_those_its_trials_can_differ_in():
    assert load_space("demo").searched_keys() == ("model", "optimizer", "lr", "batch_size")  # momentum: one value
    assert load_space("wide").searched_keys()[-2:] == ("momentum", "weight_decay")
    assert parse_space({"search": {**GOOD, "lr": [{"value": 0.1, "when": {"optimizer": "sgd"}},
                                                  {"value": 0.001, "when": {"optimizer": "adam"}}],
                                   "seed": {"int": [0, 3]}}}).searched_keys() == ("optimizer", "lr", "seed")


def test_config_names_show_the_searched_keys_beyond_those_every_name_has():
    """Two trials differing only in a searched momentum, weight decay, image size or seed got one name."""
    config = {"model": "alexnet", "optimizer": "sgd", "lr": 0.01, "batch_size": 16, "momentum": 0.87,
              "weight_decay": 1e-4, "image_size": 128, "seed": 3}
    searched = ("optimizer", "momentum", "weight_decay", "image_size", "seed")
    assert config_name(config, searched) == "alexnet_sgd_lr1.0e-02_bs16_mom0.87_wd1.0e-04_px128_seed3"
    assert config_name(config, ("momentum",)) == "alexnet_sgd_lr1.0e-02_bs16_mom0.87"
    adam = {key: value for key, value in config.items() if key != "momentum"} | {"optimizer": "adam"}
    assert config_name(adam, ("momentum",)) == "alexnet_adam_lr1.0e-02_bs16"  # a key the trial has not


def test_config_names_tell_apart_learning_rates_that_round_alike():
    base = {"dataset": "covid-chestxray-3class", "model": "alexnet", "optimizer": "adam", "batch_size": 16}
    assert config_name({**base, "lr": 2.5e-4}) == "covid-chestxray-3class_alexnet_adam_lr2.5e-04_bs16"
    assert config_name({**base, "lr": 3.4e-4}) != config_name({**base, "lr": 2.5e-4})
    assert config_name({**base, "lr": 1e-3, "pretrained": True}).endswith("_lr1.0e-03_bs16_pretrained")
    assert config_name({"model": "vgg11", "optimizer": "sgd", "lr": 0.01, "batch_size": 32}) == "vgg11_sgd_lr1.0e-02_bs32"
