"""Benchmark a study against its limits: the data path, the trainable, the orchestration, the search, the storage.

    python -m study.bench --quick                       # every part, about ten minutes on 2 CPU cores
    python -m study.bench                               # the full sizes (about an hour on 2 CPU cores)
    python -m study.bench --parts data,trainable --models alexnet --image-sizes 64,224 --repeats 3
    python -m study.bench --quick --device cuda --gpus-per-trial 0.5   # on a GPU machine

Five parts, all measured in one run on one machine:

1. data: images/s of decoding + preprocessing from the image files against reading the decode-once
   cache (cxrnets.cache + cxrnets.batches), at each image size, and the cache's images/s against the
   fastest model's training images/s (a bare loop: forward, backward, step).
2. trainable: per model, images/s of what the study's trainable runs each epoch (study.trainable:
   TrainingRun.train_epoch = training + validation metrics, then the checkpoint policy of
   study.checkpoints: the newest best's weights where the trial may end (here its last epoch), and a
   full state, saved and copied into the study's storage as Tune's Trainable.save does, when the
   policy says it is due)
   against a bare PyTorch loop doing the same forward/backward/step on the same batches, over
   consecutive epochs of one run; and the bytes it writes per epoch.
3. orchestration: `python -m study.run` as a user runs it (a subprocess with its own Ray instance):
   seconds to the first reported epoch, and the study's wall time against the sum of its trials'
   own time (Tune's time_total_s) over the trial slots (the trials its CPUs, and GPUs at
   --gpus-per-trial, hold at once).
4. search: the full grid of a small space run to the maximum epochs without early stopping against
   the ASHA + Optuna study of the same space: epochs spent and best validation metric, as ratios.
   Both run one trial at a time, seeded, so that they repeat. Beside them, plain Optuna (TPE and its
   SuccessiveHalvingPruner, one process, the same training) on the same budget, and the study again
   with two trials at once as a user runs it: its wall time against plain Optuna's (only where the
   CPUs and GPUs hold two trials at once: search/parallel_trials_at_once). Last, no training:
   the grid's curves replayed, in the study's order, through both forms of the study's ASHA
   (study.asha): the one the study ran must spend what the study spent; the other shows what it
   would spend.
5. storage: the default study (the orchestration study's sizes) run as a user runs it, with local
   storage: the bytes it writes, the bytes it leaves (by kind: weights, full states, results,
   TensorBoard events, the rest), and `study.analyze`'s time and downloads; then the same study with
   --storage s3://... against a local S3 server (moto_server): the bytes left in the bucket, and the
   analysis's time and downloads from there against the local analysis.

The bench prints a table of every figure, its goal and whether it is met, and writes them all, with
the machine and the settings, to a JSON file (--out), after every part: a bench killed partway keeps
what it measured, and Ctrl-C or SIGTERM marks the part it stopped as interrupted, stops the study it
ran, lists the parts not run and exits 130. Everything it writes besides lies in a
work directory (a new temporary one, or --workdir: a new or an empty folder), whose contents are
deleted at the end unless --keep (checkpoints and weights reach gigabytes); where a part failed, the
studies' logs (which its message names) stay there.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Callable

from study.bench.common import Bench, check_goals, machine_info, render_table, study_run_argv, write_report
from study.bench.data import bench_data
from study.bench.orchestration import bench_orchestration, orchestration_args
from study.bench.search import bench_search, search_args
from study.bench.settings import GPU_PATH_SWITCHES, PARTS, PRESETS, SMOKE_SPACE_NAME, Settings, validate
from study.bench.storage import bench_storage, s3_storage, storage_args
from study.bench.trainable import bench_trainable

log = logging.getLogger(__name__)


def planned_studies(s: Settings, workdir: Path) -> dict[str, list[str]]:
    """Every `python -m study.run` command line (its arguments) that the parts in s.parts would run,
    by study name; writes the space files they name into `workdir`, runs nothing."""
    planned: dict[str, list[str]] = {}
    if "orchestration" in s.parts:
        planned["orchestration"] = study_run_argv(s, workdir, "orchestration", orchestration_args(s, workdir))
    if "search" in s.parts:
        for name, args in search_args(s, workdir).items():
            planned[name] = study_run_argv(s, workdir, name, args)
    if "storage" in s.parts:
        args = storage_args(s, workdir)
        planned["storage-local"] = study_run_argv(s, workdir, "storage-local", args)
        planned["storage-s3"] = study_run_argv(s, workdir, "storage-s3", args, storage=s3_storage(s))
    return planned


def check_planned_studies(s: Settings) -> None:
    """study.run's own validation of every study the parts in s.parts would run (Ray does not start, nothing
    runs): a flag a study refuses stops the bench before its first part, not when the part is reached."""
    from cxrnets.errors import CxrError
    from study import run

    logging.disable(logging.WARNING)  # what study.run says of its settings, the study's log says when it runs
    try:
        with tempfile.TemporaryDirectory(prefix="cxr-bench-plan-") as directory:
            for name, argv in planned_studies(s, Path(directory)).items():
                try:
                    run.settings_from_args(run.build_parser().parse_args(argv))
                except CxrError as error:
                    raise CxrError(f"the {name} study would stop: {error}") from None
    finally:
        logging.disable(logging.NOTSET)


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets (a flag given on the command line wins over the preset):\n"
               + "\n".join(f"  {name}: {values or 'the defaults below'}" for name, values in PRESETS.items()))
    add = parser.add_argument
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: about ten minutes on 2 CPU cores")
    size.add_argument("--smoke", action="store_true", help="the smallest sizes that still give every figure "
                      "(ResNet50 at 16 px; what the test runs): a few minutes")
    d = Settings()
    add("--parts", type=_csv(str), default=None, help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    add("--models", type=_csv(str), default=None,
        help=f"models of the trainable part (default: {','.join(d.models)})")
    add("--data-models", type=_csv(str), default=None,
        help=f"models whose training speed the data part compares with (default: {','.join(d.data_models)})")
    add("--image-sizes", type=_csv(int), default=None,
        help=f"image sizes of the data part (default: {','.join(map(str, d.image_sizes))})")
    add("--trainable-image-size", type=int, default=None,
        help=f"image size of the trainable part (default: {d.trainable_image_size})")
    add("--repeats", type=int, default=None, help=f"epochs of each model's trainable and bare-loop runs, measured "
        f"alternately; images/s over all of them (default: {d.repeats})")
    add("--model-batches", type=int, default=None,
        help=f"timed training batches per model and size in the data part (default: {d.model_batches})")
    add("--decode-images", type=int, default=None, help="images decoded per size in the data part "
        "(default: every image of the dataset)")
    add("--batch-size", type=int, default=None, help=f"batch size everywhere (default: {d.batch_size})")
    add("--dataset", default=None, help="dataset of every part: the data and trainable parts, and the studies of "
        "the orchestration, search and storage parts (narrowing --study-space to it) and plain Optuna "
        f"(default: {d.dataset})")
    add("--data-root", default=None, help="where that dataset lies, for every part likewise (default: the "
        "embedded sample)")
    add("--device", default=None, help="auto (CUDA if present), cpu, cuda, cuda:1 (default: auto)")
    # The studies (study.run has no such flags) and plain Optuna train with cxrnets' TrainConfig defaults.
    add("--no-amp", action="store_true", help="disable mixed precision on CUDA in the data and trainable parts "
        "(the studies and plain Optuna keep cxrnets' default: on)")
    add("--no-channels-last", action="store_true", help="disable channels-last memory format on CUDA in the data "
        "and trainable parts (the studies and plain Optuna keep cxrnets' default: on)")
    add("--compile", action="store_true", help="torch.compile the models (CUDA only) in the data and trainable parts "
        "(the studies and plain Optuna keep cxrnets' default: off)")
    add("--study-space", default=None, help="space of the orchestration and storage studies: a YAML file (a "
        "relative path from the current folder) or a shipped space's name (default: demo, the default study's)")
    add("--study-samples", type=int, default=None,
        help="trials of the orchestration study (default: the space's own; --quick: 4)")
    add("--study-epochs", type=int, default=None,
        help="max epochs of the orchestration study (default: the space's own; --quick: 1)")
    add("--search-models", type=_csv(str), default=None,
        help=f"models of the search space (default: {','.join(d.search_models)})")
    add("--search-lrs", type=_csv(float), default=None,
        help=f"learning rates of the search space (default: {','.join(map(str, d.search_lrs))})")
    add("--search-max-epochs", type=int, default=None, help=f"max epochs of the search part (default: "
        f"{d.search_max_epochs}; --quick: {PRESETS['quick']['search_max_epochs']})")
    add("--search-grace-period", type=int, default=None,
        help=f"ASHA grace period of the search part (default: {d.search_grace_period})")
    add("--search-reduction-factor", type=int, default=None,
        help=f"ASHA reduction factor of the search part (default: {d.search_reduction_factor})")
    add("--search-sampler", choices=("tpe", "random", "grid"), default=None,
        help=f"Optuna sampler of the ASHA study (default: {d.search_sampler})")
    add("--search-metric", default=None, help="validation metric of the search part's studies (default: "
        f"{d.search_metric}, the study's; val/loss separates configurations that all predict the majority class)")
    add("--search-samples", type=int, default=None,
        help="trials of the ASHA study and of plain Optuna, at most the grid's configurations (default: as many)")
    add("--checkpoint-every", type=int, default=None, help="epochs between two full states in the trainable part "
        "and the storage part's studies (default: the study's, 5; --smoke: 1)")
    add("--checkpoint-minutes", type=float, default=None, help="or minutes, whichever comes first (default: the "
        "study's, 15)")
    add("--num-cpus", type=int, default=None, help="CPUs of each study's Ray instance (default: all)")
    add("--gpus-per-trial", type=float, default=None,
        help="GPUs per trial in the studies (default: 1 on a GPU device, else 0)")
    add("--seed", type=int, default=None, help="seed of every part (default: 0)")
    add("--out", default="bench.json", help="JSON file of every figure (default: bench.json)")
    add("--workdir", default=None, help="work directory: a new or an empty folder, whose contents the end deletes "
        "unless --keep (default: a new temporary directory)")
    add("--keep", action="store_true", help="keep the work directory (study logs, results; no checkpoints or "
        "weights)")
    return parser


def settings_from_args(args: argparse.Namespace) -> tuple[Settings, str]:
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = replace(Settings(), **PRESETS[preset])
    # every flag named like a Settings field overrides the preset when given (the switches come after)
    given = {f.name: getattr(args, f.name) for f in fields(Settings)
             if f.name not in GPU_PATH_SWITCHES and getattr(args, f.name, None) is not None}
    settings = replace(settings, **given)
    if args.no_amp:
        settings.amp = False
    if args.no_channels_last:
        settings.channels_last = False
    if args.compile:
        settings.compile = True
    validate(settings)
    settings.study_space = study_space_path(settings.study_space)
    return settings, preset


def study_space_path(space: str) -> str:
    """--study-space as the studies find it, which run in the work directory: a file as its absolute path (a
    relative one lies in the user's current folder), else the name of a shipped space."""
    from cxrnets.errors import CxrError
    from study.space import resolve_space_path

    if space == SMOKE_SPACE_NAME:
        return space
    try:
        resolve_space_path(space)
    except CxrError as error:
        raise CxrError(f"--study-space {space}: {error}") from None
    path = Path(space).expanduser()
    return str(path.resolve()) if path.is_file() else space


def studies_gpus_per_trial(gpus_per_trial: float, device: str, gpu: str | None, given: bool) -> float:
    """The GPUs per trial of the bench's studies, on the device its in-process parts use: a study's
    trial takes the GPU exactly when it is given GPUs, so the studies' figures and the bare loops'
    would otherwise come from different devices. On a GPU device the default is one GPU per trial."""
    from cxrnets.errors import CxrError

    if gpus_per_trial and not gpu:
        raise CxrError(f"--gpus-per-trial {gpus_per_trial:g} asked for, but this machine has no CUDA GPU: drop "
                       "the flag, or run the bench where there is one")
    on_gpu = device.startswith("cuda")
    if gpus_per_trial and not on_gpu:
        raise CxrError(f"--gpus-per-trial {gpus_per_trial:g} with --device {device}: the studies' trials would "
                       "train on the GPU and the other parts on the CPU; drop one of the two flags")
    if on_gpu and not gpus_per_trial:
        if given:
            raise CxrError(f"--gpus-per-trial 0 with device {device}: the studies' trials would train on the CPU "
                           "and the other parts on the GPU; give --gpus-per-trial (e.g. 0.5) or --device cpu")
        return 1.0
    return gpus_per_trial


INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"  # a part's failure when the bench was stopped in it


def failed_parts(failures: dict[str, str]) -> list[str]:
    """The parts that failed, not counting one the bench was stopped in."""
    return [part for part, error in failures.items() if error != INTERRUPTED]


def make_workdir(given: str | None) -> tuple[Path, bool]:
    """The bench's work directory, and whether the bench made it: a new temporary folder, or --workdir,
    which must be new or empty, since the end of the bench deletes what it holds."""
    from cxrnets.errors import CxrError

    if given is None:
        return Path(tempfile.mkdtemp(prefix="cxr-bench-")), True
    workdir = Path(given).expanduser().resolve()
    try:
        if workdir.is_dir():
            held = sorted(path.name for path in workdir.iterdir())
            if held:
                raise CxrError(f"--workdir {given} holds files already ({', '.join(held[:3])}"
                               f"{', ...' if len(held) > 3 else ''}): the bench deletes what its work directory "
                               "holds at the end; give a new or an empty folder")
            return workdir, False
        workdir.mkdir(parents=True)
    except OSError as error:
        raise CxrError(f"--workdir {given}: cannot make that folder ({error.strerror or error}); give a folder "
                       "that can be made, or leave --workdir out for a temporary one") from None
    return workdir, True


def remove_work(workdir: Path, made: bool, keep_logs: bool) -> bool:
    """Delete what the bench wrote: the work directory if the bench made it, else only what is in it; with
    `keep_logs`, all but the logs of its studies (which a failure's message names). Returns whether logs were
    kept."""
    logs = set(workdir.glob("*.log")) if keep_logs else set()
    if made and not logs:
        shutil.rmtree(workdir, ignore_errors=True)
        return False
    for path in workdir.iterdir():
        if path in logs:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return bool(logs)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from cxrnets.errors import CxrError
    from study import storage  # pandas and pyarrow: not for --help

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        settings, preset = settings_from_args(args)
        if out.is_dir():
            raise CxrError(f"--out {out} is a folder: give the JSON file's path (e.g. {out / 'bench.json'})")
        storage.check_writable(str(out.parent.resolve()), "--out")  # not after an hour of measuring
        machine = machine_info(settings)  # CxrError for --device cuda where there is none
        settings.gpus_per_trial = studies_gpus_per_trial(settings.gpus_per_trial, machine["device"],
                                                         machine["gpu"], given=args.gpus_per_trial is not None)
        check_planned_studies(settings)
        workdir, made_workdir = make_workdir(args.workdir)  # last: nothing to undo after it
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    bench = Bench(settings, workdir, gpus=machine["gpus"])
    log.info("bench (%s) on %s, %s cores, device %s; work directory %s", preset, machine["cpu"], machine["cores"],
             machine["device"], workdir)
    previous_sigterm = signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)  # `kill`: as Ctrl-C
    started = time.perf_counter()
    failures = {}
    runners = {"data": bench_data, "trainable": bench_trainable, "orchestration": bench_orchestration,
               "search": bench_search, "storage": bench_storage}
    to_run = [part for part in PARTS if part in settings.parts]
    report = bench_report(bench, preset, machine, started, failures, to_run, args.keep)
    logs_kept = False
    interrupted = False
    try:
        for index, part in enumerate(to_run):
            log.info("---- %s", part)
            part_started = time.perf_counter()
            load_before = os.getloadavg()[0]
            try:
                runners[part](bench)
            except KeyboardInterrupt:
                log.error("part %s interrupted (Ctrl-C or SIGTERM); the parts before it are complete", part)
                failures[part] = INTERRUPTED
                interrupted = True
            except (CxrError, RuntimeError, OSError) as error:
                log.error("part %s failed: %s", part, error)
                failures[part] = str(error)
            except Exception as error:  # noqa: BLE001 - a bench reports what it measured, whatever fails
                log.exception("part %s failed", part)
                failures[part] = f"{type(error).__name__}: {error}"
            bench.part_seconds[part] = round(time.perf_counter() - part_started, 1)
            bench.load[part] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            # After every part, so that a bench that is killed or interrupted keeps what it measured.
            report = bench_report(bench, preset, machine, started, failures, to_run[index + 1:],
                                  args.keep or bool(failed_parts(failures)))
            write_report(out, report)
            if interrupted:
                break
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if not args.keep:
            logs_kept = remove_work(workdir, made_workdir, keep_logs=bool(failed_parts(failures)))
    report = bench_report(bench, preset, machine, started, failures, report["parts_not_run"], args.keep or logs_kept)
    write_report(out, report)  # where the work directory now stands
    goals = report["goals"]
    print(f"\nBenchmark ({preset}) on {machine['cpu']}, {machine['cores']} cores, device {machine['device']}"
          + (f" ({machine['gpu']})" if machine["gpu"] else "") + f", {machine['date']}; "
          f"{report['seconds']:.0f} s in all\n")
    print(render_table(bench.figures, goals))
    if preset == "smoke":
        print(f"\ngoals not judged at the smoke sizes (--quick or the full preset judges them); figures and "
              f"details: {out}")
    else:
        print(f"\ngoals met: {sum(goal['met'] for goal in goals)} of {len(goals)}; figures and details: {out}")
    for part, error in failures.items():
        print(f"part {part} FAILED: {error}", file=sys.stderr)
    if logs_kept:
        print(f"the studies' logs are kept in {workdir}; the rest of the work directory is deleted", file=sys.stderr)
    if interrupted:
        print(f"interrupted: parts not run: {', '.join(report['parts_not_run']) or 'none'}", file=sys.stderr)
        return 130
    return 1 if failures else 0


def stop_as_on_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def recorded_settings(s: Settings) -> dict[str, Any]:
    """The settings as bench.json records them: the GPU-path switches under each part, since --no-amp,
    --no-channels-last and --compile reach the data and trainable parts only; the studies and plain Optuna
    train with cxrnets' TrainConfig defaults."""
    from cxrnets.config import TrainConfig

    recorded = asdict(s)
    given = {name: recorded.pop(name) for name in GPU_PATH_SWITCHES}
    defaults = {name: getattr(TrainConfig(), name) for name in GPU_PATH_SWITCHES}
    recorded["gpu_path_by_part"] = {part: given if part in ("data", "trainable") else defaults for part in s.parts}
    return recorded


def bench_report(bench: Bench, preset: str, machine: dict[str, Any], started: float, failures: dict[str, str],
                 not_run: list[str], workdir_kept: bool) -> dict[str, Any]:
    """Everything the bench measured so far, for --out: figures, goals, details, failures, the parts not run."""
    return {
        "preset": preset, "machine": machine, "settings": recorded_settings(bench.settings),
        "seconds": round(time.perf_counter() - started, 1), "part_seconds": bench.part_seconds,
        "load_average": {part: {"before": v[0], "after": v[1]} for part, v in bench.load.items()},
        "figures": bench.figures, "goals": check_goals(bench.figures, preset), "details": bench.details,
        "failures": failures, "parts_not_run": not_run, "workdir": str(bench.workdir) if workdir_kept else None,
    }

