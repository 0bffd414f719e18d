"""Search spaces: a YAML file of dimensions -> an Optuna define-by-run function plus study settings.

A space file (see `search_spaces/*.yaml`) has three sections:

    study:                      # defaults for the study's flags (those of study.settings.SPACE_STUDY_KEYS);
                                # the command line wins
      dataset: covid-chestxray-3class
      image_size: 64
      num_samples: 12
      max_epochs: 4
    sampler: tpe                # tpe (default), random or grid (every combination, categorical only)
    search:                     # one entry per trial-config key, tried in this order
      model: {choice: [alexnet, vgg11, resnet50]}
      optimizer: {choice: [adam, sgd]}
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      batch_size: {choice: [16, 32]}
      momentum: {uniform: [0.8, 0.99], when: {optimizer: sgd}}   # conditional: SGD trials only
      weight_decay: {value: 0.0005, when: {optimizer: sgd}}

A dimension is one of `choice: [...]`, `uniform: [low, high]`,
`loguniform: [low, high]`, `int: [low, high]` (add `log: true` for a log
scale) or `value: x` (a constant); batch_size, image_size and seed take whole
numbers, so never uniform or loguniform. `when: {key: value or [values]}` keeps
the dimension only for trials whose earlier dimensions match, each value one
that dimension can take; the key names a choice, an int range or a value (a float
drawn from a uniform or loguniform range almost never equals a given value). A key
may also take a list of such ranges, each with its own `when`; the first that
matches is used (so one that earlier ones match wherever it does is refused):

      lr:                       # Adam and SGD want learning rates a decade or two apart
        - {loguniform: [1.0e-5, 1.0e-3], when: {optimizer: adam}}
        - {loguniform: [1.0e-3, 1.0e-1], when: {optimizer: sgd}}

Optuna records each alternative as a parameter of its own, named by the key and its conditions
(`lr|optimizer=adam`), so that TPE models each range from its own trials' results; trial configs hold it
under its key (`trial_config`).

Every dimension becomes a key of the trial config, and so a column of the analysis. A space that leaves out
one of the keys trials are named by (model, optimizer, lr, batch_size) trains TrainConfig's default of it,
which the parsed space holds as a constant (`SearchSpace.filled`), so that the trials record it too. A space
file that gives one of them under `when` only must give it for every trial, of the one dataset --dataset names
where it narrows the study to one (`load_space` refuses it otherwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cxrnets.config import MIN_BATCH_SIZE, TrainConfig
from cxrnets.data import DATASET_NAMES
from cxrnets.errors import CxrError
from cxrnets.names import MIN_IMAGE_SIZE, MODEL_NAMES, OPTIMIZER_NAMES, check_seed

if TYPE_CHECKING:
    import optuna

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

# Trial-config keys a space may search over: the TrainConfig fields that define a model's training.
SEARCHABLE = ("dataset", "model", "optimizer", "lr", "batch_size", "pretrained", "momentum", "weight_decay",
              "image_size", "seed")
# The searchable keys TrainConfig holds as int (its annotations are strings): a float range would draw fractions.
WHOLE_NUMBER_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name in SEARCHABLE and f.type == "int")
# The keys a trial is named by (config_name) and the tables show: a space leaving one out gets TrainConfig's default.
NAMING_KEYS = ("model", "optimizer", "lr", "batch_size")
KINDS = ("choice", "uniform", "loguniform", "int", "value")
SAMPLERS = ("tpe", "random", "grid")
TPE_RANDOM_START_TRIALS = 10  # Optuna's TPESampler default n_startup_trials: the most a study draws at random first
# YAML 1.1 (PyYAML) reads a number in exponent form as text unless it has a dot and a signed exponent: 1e-4, 1.0e2.
EXPONENT_FORM = re.compile(r"([-+]?)(\d+)(?:\.(\d*))?([eE])([-+]?)(\d+)")
YAML_NUMBERS = "YAML reads a number with an exponent as text unless it has a dot and a signed exponent"
ALLOWED_NAMES = {"dataset": DATASET_NAMES, "model": MODEL_NAMES, "optimizer": OPTIMIZER_NAMES}
# Between a key and each condition in the Optuna parameter name of one of its alternatives: lr|optimizer=adam.
CONDITION_SEPARATOR = "|"


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str
    args: Any
    log: bool = False
    when: dict[str, tuple] = field(default_factory=dict)
    alternative: bool = False  # one of a key's alternatives, each with its own when

    @property
    def optuna_name(self) -> str:
        """The Optuna parameter it is suggested as: its key, or for one of a key's alternatives the key and its
        conditions (lr|optimizer=adam), so that TPE models each alternative's draws apart: SGD's learning
        rates from SGD trials' results only, not from Adam's, which lie on another range."""
        if not self.alternative:
            return self.name
        conditions = [f"{key}={','.join(map(str, values))}" for key, values in self.when.items()]
        return CONDITION_SEPARATOR.join([self.name, *conditions])

    def applies(self, config: dict[str, Any]) -> bool:
        return all(config.get(key) in values for key, values in self.when.items())

    def sample(self, trial: optuna.Trial) -> Any:
        if self.kind == "value":
            return self.args
        if self.kind == "choice":
            return trial.suggest_categorical(self.optuna_name, list(self.args))
        low, high = self.args
        if self.kind == "int":
            return trial.suggest_int(self.optuna_name, low, high, log=self.log)
        return trial.suggest_float(self.optuna_name, low, high, log=self.kind == "loguniform")

    def distribution(self) -> optuna.distributions.BaseDistribution | None:
        """The Optuna distribution `sample` draws from (None for a fixed value)."""
        import optuna

        if self.kind == "value":
            return None
        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(list(self.args))
        low, high = self.args
        if self.kind == "int":
            return optuna.distributions.IntDistribution(low, high, log=self.log)
        return optuna.distributions.FloatDistribution(low, high, log=self.kind == "loguniform")

    def values(self) -> list:
        """Every value of a grid dimension."""
        return [self.args] if self.kind == "value" else list(self.args)

    def can_take(self, value: Any) -> bool:
        """Whether a trial can draw `value` here, as a `when` on this dimension compares it."""
        if self.kind in ("choice", "value"):
            return value in self.values()
        low, high = self.args
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and low <= value <= high and (self.kind != "int" or isinstance(value, int))

    def lowest(self) -> Any:
        """The least value a trial can draw here."""
        return self.args[0] if self.kind not in ("choice", "value") else min(self.values())

    def describe(self) -> str:
        """What the dimension takes, as an error message lists it: 'adam', 'sgd' or int [8, 64]."""
        if self.kind in ("choice", "value"):
            return ", ".join(repr(value) for value in self.values())
        low, high = self.args
        return f"{self.kind} [{low}, {high}]"


@dataclass
class SearchSpace:
    """A parsed space file; calling it with an optuna.Trial samples one trial config (define-by-run)."""

    name: str
    dimensions: list[Dimension]
    sampler: str = "tpe"
    study: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    cover_first: tuple[str, ...] = ()
    filled: dict[str, Any] = field(default_factory=dict)  # NAMING_KEYS the file left out -> TrainConfig's default

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every applicable dimension; return the constants (Tune merges them into the config)."""
        config: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for dimension in self.dimensions:
            if dimension.name not in config and dimension.applies(config):
                config[dimension.name] = dimension.sample(trial)
                if dimension.kind == "value":
                    constants[dimension.name] = config[dimension.name]
        return constants

    def grid(self, names: tuple[str, ...] | None = None,
             values: Callable[[Dimension], list] = Dimension.values) -> list[dict[str, Any]]:
        """Every combination of the space's values, conditional dimensions applied (grid sampler);
        with `names`, every combination of those dimensions only; with `values`, of those values of each."""
        combos: list[dict[str, Any]] = [{}]
        for dimension in self.dimensions:
            if names is not None and dimension.name not in names:
                continue
            grown = []
            for config in combos:
                if dimension.name not in config and dimension.applies(config):
                    grown += [{**config, dimension.name: value} for value in values(dimension)]
                else:
                    grown.append(config)
            combos = grown
        return combos

    def configurations(self) -> list[dict[str, Any]] | None:
        """Every configuration a trial can take, as its suggested values (an Optuna trial's params, constants
        left out); None for a space with a range, whose configurations cannot be listed."""
        if any(dimension.kind not in ("choice", "value") for dimension in self.dimensions):
            return None

        def drawn_by(config: dict[str, Any], name: str) -> Dimension:
            return next(d for d in self.dimensions if d.name == name and d.applies(config))

        return [{drawn_by(config, name).optuna_name: value for name, value in config.items()
                 if drawn_by(config, name).kind == "choice"} for config in self.grid()]

    def configuration_count(self) -> int | None:
        """How many configurations `configurations` lists, counted without listing them (a space of many choices
        has millions); None for a space with a range."""
        if any(dimension.kind not in ("choice", "value") for dimension in self.dimensions):
            return None
        conditioning = {key for dimension in self.dimensions for key in dimension.when}

        def count(index: int, config: dict[str, Any]) -> int:
            if index == len(self.dimensions):
                return 1
            dimension = self.dimensions[index]
            if dimension.name in config or not dimension.applies(config):
                return count(index + 1, config)
            if dimension.name in conditioning:
                return sum(count(index + 1, {**config, dimension.name: value}) for value in dimension.values())
            # No `when` reads this dimension: each of its values leads to as many configurations.
            return len(dimension.values()) * count(index + 1, {**config, dimension.name: None})

        return count(0, {})

    def first_points(self) -> list[dict[str, Any]]:
        """The trials the study starts with: every combination of the `cover_first` choices, in the
        order the space lists them; the sampler draws their other dimensions."""
        chosen = tuple(d.name for d in self.dimensions if d.name in self.cover_first and d.kind == "choice")
        return self.grid(chosen) if chosen else []

    def optuna_grid(self) -> dict[str, list]:
        """Optuna GridSampler's search space: the suggested (non-constant) dimensions."""
        grid: dict[str, list] = {}
        for dimension in self.dimensions:
            if dimension.kind != "value":
                values = grid.setdefault(dimension.optuna_name, [])
                values += [v for v in dimension.values() if v not in values]
        return grid

    def random_start_trials(self, num_samples: int) -> int:
        """How many finished trials the TPE sampler of a study of `num_samples` trials waits for, drawing at
        random, before it models their results: the cover_first trials it runs, or half its trials if that is
        more, at most Optuna's default of 10. Optuna's 10 suits studies of a hundred trials; at 10 trials it
        would be random search throughout."""
        covered = min(len(self.first_points()), num_samples)
        return min(TPE_RANDOM_START_TRIALS, max(covered, math.ceil(num_samples / 2)))

    def make_sampler(self, seed: int, num_samples: int) -> optuna.samplers.BaseSampler:
        """The space's sampler, seeded, for a study of `num_samples` trials."""
        import optuna

        if self.sampler == "grid":
            return optuna.samplers.GridSampler(self.optuna_grid(), seed=seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.random_start_trials(num_samples))

    def searched_keys(self) -> tuple[str, ...]:
        """The keys whose value trials may differ in, in the space's order: those with a range, or with more than
        one value among their choices and constants."""
        ranged = {dimension.name for dimension in self.dimensions if dimension.kind not in ("choice", "value")}
        return tuple(name for name in dict.fromkeys(dimension.name for dimension in self.dimensions)
                     if name in ranged or len(self.values_of(name)) > 1)

    def cases(self, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        """The cases trials fall in, told apart by `keys` and the dimensions their conditions depend on (through
        conditions of conditions): each a combination of values trials can draw together, conditions applied,
        holding the keys its trials get (a key no dimension gives them is left out). A choice or constant gives
        each of its values; a range, each value a `when` names that it draws, and its other draws as one
        `OtherDraws`."""
        involved = set(keys)
        for dimension in reversed(self.dimensions):  # a when names earlier dimensions only
            if dimension.name in involved:
                involved |= set(dimension.when)
        named: dict[str, dict] = {}  # dimension -> the values whens name (a dict keeps their order)
        for dimension in self.dimensions:
            for name, values in dimension.when.items():
                named.setdefault(name, {}).update(dict.fromkeys(values))
        return self.grid(tuple(involved), lambda dimension: _cases_of(dimension, list(named.get(dimension.name, {}))))

    def every_trial_draws(self, key: str) -> bool:
        """Whether each trial draws `key` from the space (a dimension without `when`, or alternatives that hold for
        every trial), so that no trial takes the study's value of it."""
        return any(dimension.name == key for dimension in self.dimensions) and \
            all(key in case for case in self.cases((key,)))

    def values_of(self, name: str) -> list:
        """Every value a dimension can take (choices and constants), or [] if it is not in the space."""
        found = []
        for dimension in self.dimensions:
            if dimension.name == name and dimension.kind in ("choice", "value"):
                found += [v for v in dimension.values() if v not in found]
        return found


def trial_config(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's config from its Optuna params (or a config holding them): each alternative's value under its
    key (lr|optimizer=adam -> lr)."""
    return {name.split(CONDITION_SEPARATOR, 1)[0]: value for name, value in params.items()}


def config_name(config: dict[str, Any], searched: tuple[str, ...] = ()) -> str:
    """A configuration's name, as its trial is named: [dataset_]model_optimizer_lr<lr>_bs<batch size>[_pretrained],
    then the value of each other key of `searched` (SearchSpace.searched_keys) the config has: _mom0.9, _wd1.0e-04,
    _px128, _seed3.

    The learning rate has two significant digits, as the tables print it: 2.5e-04 and 3.4e-04 are told apart.
    """
    parts = [config.get("model", "?"), config.get("optimizer", "?"), f"lr{config.get('lr', 0):.1e}",
             f"bs{config.get('batch_size', '?')}"]
    if config.get("pretrained"):
        parts.append("pretrained")
    shown = {"momentum": lambda v: f"mom{v:.2g}", "weight_decay": lambda v: f"wd{v:.1e}",
             "image_size": lambda v: f"px{v}", "seed": lambda v: f"seed{v}"}
    parts += [shown[key](config[key]) for key in shown if key in searched and key in config]
    if config.get("dataset"):
        parts.insert(0, config["dataset"])
    return "_".join(str(p) for p in parts)


def resolve_space_path(space: str | Path) -> Path:
    """A YAML path, or the name of a file in search_spaces/ ("demo" or "demo.yaml"); a path with a folder is a
    path only (a mistyped /my/spaces/demo.yaml must not run the shipped demo)."""
    path = Path(space).expanduser()
    if path.is_file():
        return path
    names = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    if len(path.parts) > 1:
        raise CxrError(f"search space {space!r}: no such file; give a YAML file or one of {', '.join(names)}")
    shipped = SPACES_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    raise CxrError(f"search space {space!r} not found: give a YAML file or one of {', '.join(names)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in lines:
                    raise CxrError(f"{self.name}: {key!r} is given twice, on lines {lines[key]} and {line}; "
                                   "YAML would keep only the last: remove or rename one")
                lines[key] = line
        return super().construct_mapping(node, deep)


def read_space_file(path: Path) -> Any:
    """A space file's YAML document, refusing, naming the file, one that is not UTF-8, not valid YAML or that
    gives a key twice."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise CxrError(f"{path}: not UTF-8 (line {line} has the byte {data[error.start]:#04x}: the file was saved in "
                       "another encoding, such as latin-1 or UTF-16); save it as UTF-8") from error
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)  # the name a YAML error's position gives, and a duplicate key's message
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise CxrError(f"{path}: not valid YAML ({error})") from error
    finally:
        loader.dispose()


def load_space(space: str | Path, dataset: str | None = None) -> SearchSpace:
    """The space file a new study starts from (a path, or the name of a shipped space), parsed and checked;
    with `dataset` (study.run's --dataset), narrowed to that one dataset, for which the checks then hold."""
    path = resolve_space_path(space)
    document = read_space_file(path)
    parsed = parse_space(document, str(path), path.stem)
    # In the whole space: narrowed to one dataset, an alternative that the others' trials draw from looks shadowed.
    _check_no_alternative_is_shadowed(parsed)
    if dataset is not None:
        parsed = parse_space(narrowed_to(document, dataset), str(path), path.stem)
    # Not in parse_space: the spaces of studies that ran before these checks still resume and analyse.
    if dataset is None:
        _check_dataset_conditions(parsed)
    for dimension in parsed.dimensions:
        _check_no_repeated_choice(parsed.source, dimension)
    for key in NAMING_KEYS:
        _check_every_trial_gets(parsed, key, dataset)
    _check_momentum_is_sgds(parsed)
    check_models_fit_image_size(parsed)
    return parsed


def narrowed_to(document: dict, dataset: str) -> dict:
    """A space document whose trials all train on `dataset`: its dataset dimension, first, is that value."""
    search = {key: spec for key, spec in document["search"].items() if key != "dataset"}
    return {**document, "search": {"dataset": {"value": dataset}, **search}}


def parse_space(document: Any, source: str = "<space>", name: str = "space") -> SearchSpace:
    """Validate a space document; every mistake names the key and says what is allowed."""
    if not isinstance(document, dict):
        raise CxrError(f"{source}: a search space is a mapping with a 'search' section")
    unknown = set(document) - {"search", "study", "sampler", "cover_first", "description", "name"}
    if unknown:
        raise CxrError(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: search, study, sampler, "
                       "cover_first, description, name")
    search = document.get("search")
    if not isinstance(search, dict) or not search:
        raise CxrError(f"{source}: 'search' must map dimension names to their ranges or choices")
    sampler = document.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise CxrError(f"{source}: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    dimensions: list[Dimension] = []
    for key, spec in search.items():
        earlier = list(dimensions)
        if isinstance(spec, list):
            dimensions += _parse_alternatives(source, key, spec, earlier)
        else:
            dimensions.append(_parse_dimension(source, key, spec, earlier))
    study = document.get("study") or {}
    if not isinstance(study, dict):
        raise CxrError(f"{source}: 'study' must be a mapping of study settings")
    cover_first = _parse_cover_first(source, document.get("cover_first"), dimensions, sampler)
    searched = {dimension.name for dimension in dimensions}
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    filled = {key: defaults[key] for key in NAMING_KEYS if key not in searched}
    dimensions = [Dimension(key, "value", value) for key, value in filled.items()] + dimensions
    space = SearchSpace(str(document.get("name", name)), dimensions, sampler, study, source, cover_first, filled)
    if sampler == "grid":
        continuous = [d.name for d in dimensions if d.kind not in ("choice", "value")]
        if continuous:
            raise CxrError(f"{source}: the grid sampler needs choice or value dimensions; "
                           f"{continuous} are ranges")
    return space


def _parse_cover_first(source: str, names: Any, dimensions: list[Dimension], sampler: str) -> tuple[str, ...]:
    """`cover_first: [model, optimizer]`: choice dimensions whose every combination starts the study."""
    if names is None:
        return ()
    where = f"{source}: cover_first"
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise CxrError(f"{where}: must be a list of choice dimensions, e.g. [model, optimizer]")
    if sampler == "grid":
        raise CxrError(f"{where}: the grid sampler already tries every combination; drop cover_first")
    by_name = {d.name: d for d in dimensions}
    for name in names:
        if name not in by_name:
            raise CxrError(f"{where}: {name!r} is not a dimension of the space; choose from {', '.join(by_name)}")
        dimension = by_name[name]
        if dimension.kind not in ("choice", "value"):  # a value: a choice the command line fixed (--dataset)
            raise CxrError(f"{where}: {name!r} is a {dimension.kind} range, not a choice: only choices have "
                           "combinations to cover")
        uncovered = [key for key in dimension.when if key not in names]
        if uncovered:
            raise CxrError(f"{where}: {name!r} depends on {uncovered}, which must be covered too")
    return tuple(names)


def _parse_alternatives(source: str, key: str, specs: list, earlier: list[Dimension]) -> list[Dimension]:
    """One key with a range per condition, e.g. a learning-rate range for each optimizer."""
    where = f"{source}: search.{key}"
    if not specs:
        raise CxrError(f"{where}: an empty list; give one range, or a list of ranges each with its own 'when'")
    if not any(isinstance(spec, dict) for spec in specs):  # `model: [alexnet, vgg11]`: choice: forgotten
        choice = yaml.safe_dump({"choice": specs}, default_flow_style=True, width=math.inf).strip()
        raise CxrError(f"{where}: a list of values; to search over them, write {key}: {choice} (a list under a key "
                       "is of ranges, each with its own 'when')")
    alternatives = [replace(_parse_dimension(source, key, spec, earlier, f"{where}[{i}]"), alternative=True)
                    for i, spec in enumerate(specs)]
    for i, alternative in enumerate(alternatives):
        if not alternative.when:
            raise CxrError(f"{where}[{i}]: each alternative needs a 'when' (which trials it is for)")
    scales = {(a.kind, a.log) for a in alternatives if a.kind != "value"}
    if len(scales) > 1 or any(a.kind == "choice" for a in alternatives):
        # The analysis bins a key's values on one scale (study.analysis.reading.search_dimensions).
        raise CxrError(f"{where}: alternatives must be ranges of one kind (all loguniform, all uniform or all int) "
                       f"or constants; got {sorted(a.kind for a in alternatives)}")
    return alternatives


def _parse_dimension(source: str, key: str, spec: Any, earlier: list[Dimension], where: str = "") -> Dimension:
    where = where or f"{source}: search.{key}"
    if key not in SEARCHABLE:
        raise CxrError(f"{where}: unknown dimension {key!r}; searchable keys are {', '.join(SEARCHABLE)}")
    if not isinstance(spec, dict):
        spec = {"value": spec}
    spec = dict(spec)
    when_spec = spec.pop("when", {}) or {}
    log = spec.pop("log", False)
    if not isinstance(log, bool):
        raise CxrError(f"{where}.log: takes true or false, got {log!r}")
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in KINDS]
    if extra or len(kinds) != 1:
        raise CxrError(f"{where}: give exactly one of {', '.join(KINDS)} (plus optional when/log); got {sorted(spec)}")
    kind = kinds[0]
    args = spec[kind]
    if log and kind in ("uniform", "choice", "value"):  # sample() would ignore it: a uniform range is drawn linearly
        instead = "use loguniform: [low, high] instead" if kind == "uniform" else f"a {kind} has no scale: drop log"
        raise CxrError(f"{where}.log: only int and loguniform ranges take log: true; {instead}")
    if not isinstance(when_spec, dict):
        raise CxrError(f"{where}.when: must map an earlier dimension to its value(s)")
    when = {}
    for condition, values in when_spec.items():
        conditioning = [d for d in earlier if d.name == condition]
        if not conditioning:
            raise CxrError(f"{where}.when: {condition!r} must be a dimension listed before {key!r}")
        when[condition] = tuple(values) if isinstance(values, list) else (values,)
        if not when[condition]:
            raise CxrError(f"{where}.when: {condition}: [] names no value, so {key} would apply to no trial; give the "
                           f"{condition} value(s) it is for, or drop the condition")
        for value in when[condition]:
            _check_condition_value(where, condition, value, conditioning)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise CxrError(f"{where}.choice: must be a non-empty list")
        for value in args:
            _check_value(where, key, value)
        args = tuple(args)
    elif kind == "value":
        _check_value(where, key, args)
    else:
        if not (isinstance(args, list) and len(args) == 2 and all(isinstance(v, (int, float)) for v in args)):
            raise CxrError(f"{where}.{kind}: must be [low, high] numbers, got {args!r}{_yaml_number_hint(args, key)}")
        low, high = args
        if not low < high:
            raise CxrError(f"{where}.{kind}: low {low} must be below high {high}")
        if (kind == "loguniform" or log) and low <= 0:
            raise CxrError(f"{where}.{kind}: a log scale needs low > 0, got {low}")
        if kind == "int" and not all(isinstance(v, int) for v in args):
            raise CxrError(f"{where}.int: bounds must be integers, got {args!r}")
        if kind != "int" and key in WHOLE_NUMBER_KEYS:
            log_scale = ", log: true" if kind == "loguniform" else ""
            raise CxrError(f"{where}.{kind}: {key} is a whole number, but a {kind} range draws fractions "
                           f"(such as 42.34); use {{int: [{math.ceil(low)}, {math.floor(high)}]{log_scale}}}")
        for value in args:
            _check_value(where, key, value)
        args = tuple(args)
    return Dimension(key, kind, args, log, when)


def _check_condition_value(where: str, condition: str, value: Any, conditioning: list[Dimension],
                           narrowed: bool = True) -> None:
    """Refuse a `when` value its dimension never takes (`optimizer: SGD` for sgd), or takes only as a float drawn
    from a range (`lr: 0.01`, almost never drawn exactly): the condition would (almost) never hold. `narrowed`:
    a condition may name any dataset: study.run's --dataset narrows a space to one, which may be one its file
    gives conditions for but does not search, and conditions on the others then never hold."""
    continuous = [dimension for dimension in conditioning if dimension.kind in ("uniform", "loguniform")]
    if any(dimension.can_take(value) for dimension in conditioning if dimension not in continuous):
        return
    if narrowed and condition == "dataset" and value in DATASET_NAMES:
        return
    if continuous:
        raise CxrError(f"{where}.when: {condition} is a {continuous[0].kind} range, whose drawn floats almost never "
                       f"equal {value!r}, so the condition would almost never hold; a when can name a choice, an "
                       f"int range or a value: make {condition} a choice to condition on it")
    takes = " or ".join(dict.fromkeys(dimension.describe() for dimension in conditioning))
    raise CxrError(f"{where}.when: {condition} never takes {value!r}, so the condition would never hold; "
                   f"choose from {takes}{_yaml_number_hint(value, condition)}")


def _check_dataset_conditions(space: SearchSpace) -> None:
    """Refuse, in a space not narrowed by --dataset, a `when` naming a dataset its dataset dimension never takes,
    a real dataset's name included: the condition would never hold."""
    for position, dimension in enumerate(space.dimensions):
        where = f"{space.source}: {_key_of(space, dimension)}"
        datasets = [earlier for earlier in space.dimensions[:position] if earlier.name == "dataset"]
        for value in dimension.when.get("dataset", ()):
            _check_condition_value(where, "dataset", value, datasets, narrowed=False)


def _check_value(where: str, key: str, value: Any) -> None:
    if key in ALLOWED_NAMES:
        if value not in ALLOWED_NAMES[key]:
            raise CxrError(f"{where}: unknown {key} {value!r}; choose from {', '.join(ALLOWED_NAMES[key])}")
        return
    if key == "pretrained":
        if not isinstance(value, bool):
            raise CxrError(f"{where}: pretrained takes true or false, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CxrError(f"{where}: {key} takes numbers, got {value!r}{_yaml_number_hint(value, key)}")
    positive = key in ("lr", "batch_size", "image_size")
    if (positive and value <= 0) or value < 0:
        raise CxrError(f"{where}: {key} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    if key == "momentum" and value >= 1:
        raise CxrError(f"{where}: momentum must be below 1 (SGD's velocity would never decay), got {value!r}")
    if key == "batch_size" and value < MIN_BATCH_SIZE:
        raise CxrError(f"{where}: batch_size must be at least {MIN_BATCH_SIZE} (a training batch of one image is "
                       f"skipped: BatchNorm cannot train on it), got {value!r}")
    if key in WHOLE_NUMBER_KEYS and not isinstance(value, int):
        raise CxrError(f"{where}: {key} must be an integer, got {value!r}")
    if key == "seed":
        check_seed(value, f"{where}: seed")  # a trial's TrainConfig would refuse it, after Ray started


def _yaml_number_hint(given: Any, key: str) -> str:
    """'; write 1.0e-4 (YAML reads ...)' where `given` (a value, or a range's [low, high]) holds text that YAML read
    from a number in exponent form (1e-4), and every value of it can be written as a number; else ''."""
    values = given if isinstance(given, list) else [given]
    if isinstance(given, list) and len(given) != 2 or not any(isinstance(value, str) for value in values):
        return ""
    written = [_as_yaml_number(value, whole=key in WHOLE_NUMBER_KEYS) for value in values]
    if None in written:
        return ""
    shown = f"[{', '.join(written)}]" if isinstance(given, list) else written[0]
    return f"; write {shown} ({YAML_NUMBERS})"


def _as_yaml_number(value: Any, whole: bool) -> str | None:
    """How to write `value` so that YAML reads it as the number it is or was meant to be: 1.0e-4 for the text
    1e-4 (an integer for a `whole` number key: 30 for 3e1), 1.0e-06 for the float 1e-06; None for text that is
    no number, and for what is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    text = value.strip() if isinstance(value, str) else repr(value)
    match = EXPONENT_FORM.fullmatch(text)
    if match is None:
        return None if isinstance(value, str) else text
    if whole and float(text).is_integer():
        return str(int(float(text)))
    sign, digits, fraction, e, exponent_sign, exponent = match.groups()
    return f"{sign}{digits}.{fraction or '0'}{e}{exponent_sign or '+'}{exponent}"


def _check_no_repeated_choice(source: str, dimension: Dimension) -> None:
    """Refuse a choice that gives a value twice (0.001 and 1.0e-3 are one number): the grid, cover_first and
    the samplers would count it twice."""
    if dimension.kind != "choice":
        return
    for later, value in enumerate(dimension.args):
        first = dimension.args.index(value)  # the first equal value: numbers compare as numbers
        if first < later:
            earlier = dimension.args[first]
            given = (f"{value!r} is given twice" if repr(earlier) == repr(value)
                     else f"{earlier!r} and {value!r} are the same number")
            raise CxrError(f"{source}: search.{dimension.name}.choice: {given} (items {first + 1} and {later + 1}): a "
                           "value given twice counts twice in the grid, in cover_first and in the sampler's draws; "
                           "give each value once")


class OtherDraws:
    """A range's draws that no `when` names, as one case of a trial (SearchSpace.cases)."""

    def __init__(self, dimension: Dimension, named: list) -> None:
        self.text = (f"other than {', '.join(map(repr, named))} of" if named else "drawn from") + \
            f" {dimension.describe()}"
        low, high = dimension.args
        self.least = low if dimension.kind != "int" else next(v for v in range(low, high + 1) if v not in named)

    def __repr__(self) -> str:
        return self.text


def _check_every_trial_gets(space: SearchSpace, key: str, dataset: str | None = None) -> None:
    """Refuse a key given under `when` only (lr for Adam) where some trials match none of its conditions: they
    would train TrainConfig's default of it, with no value in their config (so in their names and results).
    `dataset`: the one dataset --dataset narrowed the space to."""
    left_out = next((case for case in space.cases((key,)) if key not in case), None)
    if left_out is None:
        return
    from_command_line = dataset is not None and left_out.get("dataset") == dataset
    trials = ", ".join(f"{name} {value!r}" + (" (--dataset)" if name == "dataset" and from_command_line else "")
                       for name, value in left_out.items())
    default = next(f.default for f in fields(TrainConfig) if f.name == key)
    raise CxrError(f"{space.source}: search.{key}: no when of {key} holds for trials with {trials}: they would train "
                   f"cxrnets' default {key} {default} unrecorded (their names and results show no {key}); add an "
                   f"alternative whose when holds for them, or give {key} a range or value without when"
                   + (f", or choose a --dataset the space gives {key} for" if from_command_line else ""))


def _check_no_alternative_is_shadowed(space: SearchSpace) -> None:
    """Refuse an alternative that no trial draws from: a trial draws from the first alternative of a key that
    holds, and earlier ones hold for every trial this one holds for (`when: {optimizer: [adam, sgd]}` before
    `when: {optimizer: sgd}`). One that holds for no trial (of another dataset than --dataset's) is left be."""
    for key in dict.fromkeys(dimension.name for dimension in space.dimensions if dimension.alternative):
        alternatives = [dimension for dimension in space.dimensions if dimension.name == key and dimension.alternative]
        cases = space.cases(tuple(dict.fromkeys(name for a in alternatives for name in a.when)))
        for position, alternative in enumerate(alternatives):
            holds = [case for case in cases if alternative.applies(case)]
            earlier = alternatives[:position]
            if not holds or not all(any(e.applies(case) for e in earlier) for case in holds):
                continue
            shadowing = [_key_of(space, e) for e in earlier if any(e.applies(case) for case in holds)]
            where = _key_of(space, alternative)
            conditions = ", ".join(f"{name}: {', '.join(map(str, values))}"
                                   for name, values in alternative.when.items())
            them, their = ("it", "its") if len(shadowing) == 1 else ("them", "their")
            raise CxrError(f"{space.source}: {where} (when {conditions}) is never drawn: a trial draws from the first "
                           f"alternative that holds, and {' and '.join(shadowing)} hold"
                           f"{'s' if len(shadowing) == 1 else ''} for every trial {where} is for; narrow {their} "
                           f"when, move {where} before {them}, or drop {where}")


def _check_momentum_is_sgds(space: SearchSpace) -> None:
    """Refuse a momentum that trials of another optimizer get: they would ignore it, yet record it (and
    TrainConfig.validate refuses a momentum other than its default for them)."""
    case = next((case for case in space.cases(("optimizer", "momentum"))
                 if "momentum" in case and case.get("optimizer") != "sgd"), None)
    if case is None:
        return
    trials = ", ".join(f"{name} {value!r}" for name, value in case.items() if name != "momentum")
    raise CxrError(f"{space.source}: search.momentum: trials with {trials} get a momentum, which only SGD uses: "
                   f"{case.get('optimizer')} would ignore it; add when: {{optimizer: sgd}} to momentum")


def _cases_of(dimension: Dimension, named: list) -> list:
    """The values of `dimension` that conditions tell apart: every value of a choice or constant; of a range,
    each value a when names that it draws (floats almost never), and its other draws."""
    if dimension.kind in ("choice", "value"):
        return dimension.values()
    if dimension.kind != "int":
        return [OtherDraws(dimension, [])]
    drawn = [value for value in named if dimension.can_take(value)]
    low, high = dimension.args
    return drawn + ([OtherDraws(dimension, drawn)] if high - low + 1 > len(drawn) else [])


def check_models_fit_image_size(space: SearchSpace, study_size: int | None = None, where: str = "") -> None:
    """Catch 'alexnet at 32 px' before any trial runs: each model against the least size its trials can draw from
    search.image_size, conditions applied, and, with `study_size` (the study's size, named by `where`), against
    that where its trials draw none."""
    for case in space.cases(("model", "image_size")):
        model = case["model"]
        if "image_size" in case:
            drawn = case["image_size"]
            size = drawn.least if isinstance(drawn, OtherDraws) else drawn
            named = f"{space.source}: {_key_of(space, _drawing(space, 'image_size', case))}"
        elif study_size is not None:
            size, named = study_size, where
        else:
            continue
        if size < MIN_IMAGE_SIZE[model]:
            raise CxrError(f"{named}: image_size {size} is too small for {model} "
                           f"(needs at least {MIN_IMAGE_SIZE[model]} px); raise it to {MIN_IMAGE_SIZE[model]} "
                           f"or more, or drop {model}")


def _drawing(space: SearchSpace, key: str, case: dict[str, Any]) -> Dimension:
    """The dimension that draws `key` for trials of `case` (one of SearchSpace.cases): the first that applies."""
    return next(dimension for dimension in space.dimensions if dimension.name == key and dimension.applies(case))


def _key_of(space: SearchSpace, dimension: Dimension) -> str:
    """Where the space file gives `dimension`: search.lr, or search.lr[1] for the second of lr's alternatives."""
    if not dimension.alternative:
        return f"search.{dimension.name}"
    alternatives = [d for d in space.dimensions if d.name == dimension.name and d.alternative]
    return f"search.{dimension.name}[{next(i for i, d in enumerate(alternatives) if d is dimension)}]"
