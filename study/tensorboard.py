"""The study's TensorBoard files: every trial's curves under the study's metric names, and an HPARAMS tab that
ranks the trials on their best epoch, as the study selects them.

Each trial's folder gets events files (StudyTensorBoard, a Tune callback on the driver): per epoch (the step)
the metrics the trial reported (`train/loss`, `val/f1_macro`, ..., `epoch_seconds`, `images_per_second`; not
Tune's counters) and `best/<study metric>`, the trial's best value so far, so that its last point is the trial's
best; the trial's hyperparameters when it starts (a running trial is listed) and its status when it ends (a
failure if it failed or diverged; a trial that ends without running again after a resume, ended by ASHA where it
waited at a rung, gets it in a new file). The hparams plugin shows the first status it reads of a trial: when a
resume runs an errored trial again, its earlier files are rewritten without their failure (in the study's
storage, and where Tune staged them), every other event kept.

The study's folder gets one experiment summary (write_experiment): the HPARAMS tab's columns, every dimension
of the search space and the seed (study.confirm's seed runs of a configuration differ in it alone), and
`best/<study metric>` first, then the validation metrics. TensorBoard's hparams plugin
takes the columns from one experiment summary, an arbitrary one if there are several, so a trial's own files
hold none; with none at all (a logdir below the study's folder, such as study.confirm's `confirm/`) it lists
every hyperparameter its trials have and every curve.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import numbers
import os
import struct
import tempfile
import time
from pathlib import Path
from shlex import quote
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import ListValue, Value
from ray.tune.logger import TBXLoggerCallback
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.api_pb2 import DataType, Experiment, HParamInfo, Interval, MetricInfo, MetricName, Status
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

from cxrnets.data import MULTILABEL_DATASETS
from study import storage
from study.settings import METRICS, MULTILABEL_METRICS, StudySettings, resumed_study_uri, study_location
from study.space import SearchSpace

log = logging.getLogger(__name__)

EXPERIMENT_FILE = "events.out.tfevents.study"  # at the study folder's root: TensorBoard's run "."
TIMING_METRICS = ("epoch_seconds", "images_per_second")  # reported each epoch beside the train/ and val/ metrics
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
EVENTS_PREFIX = "events.out.tfevents."  # how every events file's name begins (tensorboardX's EventsWriter)


def best_tag(metric: str) -> str:
    return f"best/{metric}"


def tensorboard_line(uri: str) -> str:
    """The command that shows the TensorBoard curves of the trials under `uri` (Tune's own hint names its
    temporary session folder instead)."""
    line = f"tensorboard: tensorboard --logdir {quote(uri)}"
    # TensorBoard reads s3:// through boto3 and gs:// through fsspec's gcsfs, if they are installed.
    reader = {"s3": "boto3", "gs": "gcsfs"}.get(storage.scheme_of(uri))
    if reader and importlib.util.find_spec(reader) is None:
        line += f"  (TensorBoard reads this with {reader}: pip install {reader})"
    return line


def write_experiment(settings: StudySettings) -> None:
    """Write the study's experiment summary: the HPARAMS tab's columns (see the module's docstring)."""
    multilabel = any(dataset in MULTILABEL_DATASETS for dataset in settings.data_roots)
    metrics = [best_tag(settings.metric)] + [m for m in METRICS if multilabel or m not in MULTILABEL_METRICS]
    columns = hparam_infos(settings.search_space())
    if "seed" not in {info.name for info in columns}:  # a space may search it
        columns.append(HParamInfo(name="seed", type=DataType.Value("DATA_TYPE_FLOAT64")))
    experiment = Experiment(hparam_infos=columns,
                            metric_infos=[MetricInfo(name=MetricName(tag=tag)) for tag in metrics])
    summary = hparams_summary(EXPERIMENT_TAG, HParamsPluginData(experiment=experiment))
    with tempfile.TemporaryDirectory() as folder:
        writer = EventsWriter(str(Path(folder) / "events"))
        writer.write_event(Event(wall_time=time.time(), summary=summary))
        writer.close()
        events = next(Path(folder).glob("events.out.tfevents.*")).read_bytes()
    storage.write_bytes(storage.join(settings.study_uri, EXPERIMENT_FILE), events)


def hparam_infos(space: SearchSpace) -> list[HParamInfo]:
    """One column per dimension of the space, with the values or the range its alternatives can take."""
    infos = []
    for name in dict.fromkeys(dimension.name for dimension in space.dimensions):
        alternatives = [dimension for dimension in space.dimensions if dimension.name == name]
        if all(dimension.kind in ("choice", "value") for dimension in alternatives):
            values = space.values_of(name)
            kind = ("DATA_TYPE_STRING" if isinstance(values[0], str) else
                    "DATA_TYPE_BOOL" if isinstance(values[0], bool) else "DATA_TYPE_FLOAT64")
            infos.append(HParamInfo(name=name, type=DataType.Value(kind),
                                    domain_discrete=ListValue(values=[hparam_value(v) for v in values])))
        else:
            highest = [max(d.values()) if d.kind in ("choice", "value") else d.args[1] for d in alternatives]
            interval = Interval(min_value=min(d.lowest() for d in alternatives), max_value=max(highest))
            infos.append(HParamInfo(name=name, type=DataType.Value("DATA_TYPE_FLOAT64"), domain_interval=interval))
    return infos


def hparam_value(value: Any) -> Value:
    if isinstance(value, str):
        return Value(string_value=value)
    if isinstance(value, bool):
        return Value(bool_value=value)
    return Value(number_value=float(value))


def hparams_summary(tag: str, data: HParamsPluginData) -> Summary:
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                      content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def drop_session_ends(trial_uri: str) -> None:
    """Rewrite the events files of a trial's folder that hold a session end (its status) without it, so that
    the status the trial ends with this time is the one TensorBoard shows. A folder that cannot be listed,
    read or written is warned of and left as it is: a resume never stops for what TensorBoard shows."""
    try:
        for entry in storage.listing(trial_uri):
            if entry.is_dir or not entry.name.startswith(EVENTS_PREFIX):
                continue
            events = storage.read_bytes(entry.uri)
            kept = without_session_ends(events)
            if kept != events:
                storage.write_bytes(entry.uri, kept)
    except OSError as error:
        log.warning("%s: could not take the earlier failure out of the trial's TensorBoard events (%s): the "
                    "HPARAMS tab may still show it as failed", trial_uri, error)


def without_session_ends(events: bytes) -> bytes:
    """An events file without its session end events, each other record kept byte for byte. A record is the
    event's length (8 bytes) and the length's checksum (4), the event, and the event's checksum (4); a record
    cut short (a driver killed as it wrote), or one that does not decode (a disk's damage), stays as it is, with
    all that follows it."""
    records, offset = [], 0
    while offset + 12 <= len(events):
        (length,) = struct.unpack_from("<Q", events, offset)
        end = offset + 12 + length + 4
        if end > len(events):
            break
        try:
            event = Event.FromString(events[offset + 12:end - 4])
        except DecodeError:
            break
        if not any(value.tag == SESSION_END_TAG for value in event.summary.value):
            records.append(events[offset:end])
        offset = end
    return b"".join(records) + events[offset:]


def is_metric(key: str, value: Any) -> bool:
    """Whether a result's entry is a metric the study reports (not Tune's counters, nor the study's own
    bookkeeping such as `diverged`), with a value TensorBoard can plot."""
    return (key.startswith(("train/", "val/")) or key in TIMING_METRICS) and finite_number(value)


def finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class StudyTensorBoard(TBXLoggerCallback):
    """Writes each trial's TensorBoard events (see the module's docstring). `job_configs`: for a run whose
    trial configs are {"job": i} (study.confirm), the configuration each job trains; `seed`: the seed of the
    trials whose configuration has none (the study's --seed).

    A TBXLoggerCallback, so that Tune adds no TensorBoard logger of its own (it still adds its CSV and JSON
    loggers); it writes its files itself, each event on disk at once, from where Tune uploads the trial's
    folder to the study's storage. Tune's newer output engine (-v) then prints a TensorBoard command naming
    its staging folder, which it has no option to leave out: `logdir`, the run's folder (the study, or its
    confirm run), is logged right after it, as the command to use.

    The running best of a trial resumed from an earlier epoch (its last full state) counts only the epochs
    before the one it reports again; what the unfinished trials reported is part of Tune's snapshot
    (get_state), which a resume restores.
    """

    # Class defaults too: a callback unpickled from a run saved before it had them.
    seed: int | None = None
    logdir: str | None = None
    tune_hint_due = False  # set up, and Tune's TensorBoard hint not yet followed by the right command

    def __init__(self, metric: str, mode: str, job_configs: list[dict[str, Any]] | None = None,
                 seed: int | None = None, logdir: str | None = None):
        super().__init__()
        self.metric, self.mode, self.job_configs, self.seed, self.logdir = metric, mode, job_configs, seed, logdir
        self.reported: dict[str, dict[int, float]] = {}  # trial id -> epoch -> its value of the study metric
        self.writers: dict[Any, EventsWriter] = {}  # trial -> its events file, while it runs
        self.restarted: set = set()  # trials whose events file holds no result yet

    def setup(self, *args, **kwargs) -> None:
        super().setup(*args, **kwargs)
        self.tune_hint_due = True

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        """Tune prints its TensorBoard hint after it sets its callbacks up, before its first step; its newer
        output engine is on unless RAY_AIR_NEW_OUTPUT is 0 (study.driver.quiet_tune sets it 1 for -v)."""
        if self.tune_hint_due:
            self.tune_hint_due = False
            if self.logdir is not None and os.environ.get("RAY_AIR_NEW_OUTPUT", "1") != "0":
                log.info("%s  (the trials' TensorBoard events; not Tune's folder above)",
                         tensorboard_line(study_location(self.logdir)))

    def get_state(self) -> dict[str, Any]:
        return {"reported": self.reported}

    def set_state(self, state: dict[str, Any]) -> None:
        self.reported = state["reported"]

    def hyperparameters(self, trial) -> dict[str, Any]:
        config = self.job_configs[trial.config["job"]] if self.job_configs is not None else trial.config
        if self.seed is not None:
            config = {"seed": self.seed, **config}
        return {key: value for key, value in config.items() if isinstance(value, (str, bool, int, float))}

    def log_trial_start(self, trial) -> None:
        if trial in self.writers:
            self.writers[trial].close()
        trial.init_local_path()
        run_uri = resumed_study_uri()
        if run_uri is not None:  # the trial may have errored before
            # Its earlier files are in the study's storage; a resume on the same Ray instance stages the trial's
            # files where the first run did, and Tune's next upload would bring back the copies there.
            for folder in (trial.local_path, storage.join(run_uri, storage.name_of(trial.path))):
                drop_session_ends(folder)
        self.open_events_file(trial)
        start = SessionStartInfo(start_time_secs=time.time())
        for key, value in self.hyperparameters(trial).items():
            start.hparams[key].CopyFrom(hparam_value(value))
        self.write(trial, hparams_summary(SESSION_START_TAG, HParamsPluginData(session_start_info=start)))
        self.restarted.add(trial)

    def open_events_file(self, trial) -> None:
        """A new events file in the trial's folder, named after its start to the second, then the nanosecond:
        TensorBoard reads a folder's files in name order, and a second file of the same second would otherwise
        replace the first."""
        trial.init_local_path()
        self.writers[trial] = EventsWriter(str(Path(trial.local_path) / "events"), f".{time.time_ns()}")

    def log_trial_result(self, iteration: int, trial, result: dict[str, Any]) -> None:
        if trial not in self.writers:
            self.log_trial_start(trial)
        epoch = int(result.get("epoch", result["training_iteration"]))
        if trial in self.restarted:
            # A trial resumed from an earlier epoch reports that epoch and the later ones again: TensorBoard
            # drops what an earlier file holds from the step at which a session starts again.
            self.write(trial, step=epoch, session_log=SessionLog(status=SessionLog.START))
            self.restarted.discard(trial)
        if result.get("diverged"):
            return  # nothing was measured: its study metric is a placeholder (study.trainable)
        values = [Summary.Value(tag=key, simple_value=float(value)) for key, value in result.items()
                  if is_metric(key, value)]
        best = self.running_best(trial.trial_id, epoch, result.get(self.metric))
        if best is not None:
            values.append(Summary.Value(tag=best_tag(self.metric), simple_value=best))
        self.write(trial, Summary(value=values), step=epoch)

    def write(self, trial, summary: Summary | None = None, step: int = 0, **event: Any) -> None:
        """Write an event to the trial's file, on disk at once."""
        self.writers[trial].write_event(Event(wall_time=time.time(), step=step, summary=summary, **event))
        self.writers[trial].flush()

    def running_best(self, trial_id: str, epoch: int, value: Any) -> float | None:
        """The trial's best value of the study metric up to `epoch`, this epoch's `value` included."""
        reported = {e: v for e, v in self.reported.get(trial_id, {}).items() if e < epoch}
        if finite_number(value):
            reported[epoch] = float(value)
        self.reported[trial_id] = reported
        if not reported:
            return None
        return max(reported.values()) if self.mode == "max" else min(reported.values())

    def log_trial_end(self, trial, failed: bool = False) -> None:
        """The trial's end status: a failure if it failed or diverged (its loss NaN or infinite), else a success.
        A trial that ends without running in this run (one waiting at a rung when the study was interrupted,
        which ASHA ends after the resume) gets a new events file for it."""
        if trial not in self.writers:
            self.open_events_file(trial)
        diverged = bool((trial.last_result or {}).get("diverged"))
        end = SessionEndInfo(status=Status.Value("STATUS_FAILURE" if failed or diverged else "STATUS_SUCCESS"),
                             end_time_secs=time.time())
        self.write(trial, hparams_summary(SESSION_END_TAG, HParamsPluginData(session_end_info=end)))
        self.writers.pop(trial).close()
        self.restarted.discard(trial)
        if not failed:  # a resume continues failed trials, never completed ones
            self.reported.pop(trial.trial_id, None)
