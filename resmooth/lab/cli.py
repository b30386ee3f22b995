"""The command line: ``python -m resmooth train | sweep | report`` (run through :mod:`resmooth.__main__`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .. import __version__
from .._checks import flags
from .config import Config
from .runfiles import CHECKPOINT, NonFiniteLossError, RunExistsError
from .train import load_run_data, train


def _add_field_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per field of the dataclass ``cls``, its type, choices, default and help read from the field itself."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).split(" ")[0]  # "float | None" -> "float"
        # argparse formats help with %: a literal % in the field's text must be doubled.
        text = f.metadata["help"].replace("%", "%%")
        if "(default:" not in text:  # a field whose default needs words says it itself
            text += " (default: %(default)s)"
        if kind == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        else:
            convert = {"int": int, "float": float}.get(kind, str)
            choices = f.metadata.get("choices")
            parser.add_argument(flag, dest=f.name, type=convert, default=f.default, choices=choices,
                                metavar=None if choices else f.name.upper(), help=text)


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's argument name and its flag (``weight_decay`` -> ``--weight-decay``): what an error names."""
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}


DOWNLOAD_HELP = "download a dataset whose files are missing from the data root (needs network access)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, its options' help read from the config fields."""
    parser = argparse.ArgumentParser(prog="python -m resmooth", description="Residual smoothing (Cho, Kwon, Hong, 2019): train, sweep, report.")
    parser.add_argument("--version", action="version", version=f"resmooth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train one run")
    _add_field_arguments(p_train, Config)
    p_train.add_argument("--out", help="folder for metrics.jsonl, checkpoint.pt and summary.json (default: keep nothing)")
    p_train.add_argument("--resume", action="store_true",
                         help="continue from OUT/checkpoint.pt (without one, the run starts from scratch)")
    p_train.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    p_train.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    p_train.add_argument("--quiet", action="store_true", help="no progress bar")

    p_sweep = sub.add_parser("sweep", help="run a grid of settings x trials from a TOML file, and report it")
    p_sweep.add_argument("file", help="the sweep file (TOML: name, kind, trials, [base], [[grid]]; see resmooth.lab.sweep)")
    p_sweep.add_argument("--out", help="results folder (default: results/<name>)")
    p_sweep.add_argument("--data-root", help="override the data root of every run (default: the file's, else $RESMOOTH_DATA)")
    p_sweep.add_argument("--device", help="override the device of every run: auto, cpu, cuda or cuda:N")
    p_sweep.add_argument("--download", action="store_true", help=DOWNLOAD_HELP + " (local executor)")
    p_sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    p_sweep.add_argument("--settings", type=int, metavar="K",
                         help="run the first K settings of the file only, every seed of each (a budget cut drops "
                              "settings from the end of the file's priority order, never seeds; default: all)")
    p_sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                         help="local: one trial after another in this process (default); ray: one Ray task per "
                              "trial (classification sweeps)")
    p_sweep.add_argument("--address", help="ray: a running cluster ('auto', or ray://HOST:10001); default: start a local one")
    p_sweep.add_argument("--cpus-per-trial", type=int, default=1, help="ray: CPUs (and torch threads) per trial (default: %(default)s)")
    p_sweep.add_argument("--gpus-per-trial", type=float, default=0, help="ray: GPUs per trial, may be a fraction (default: %(default)s)")
    p_sweep.add_argument("--max-retries", type=int, default=2, help="ray: retries of a trial whose worker dies (default: %(default)s)")
    p_sweep.add_argument("--no-shared-fs", dest="shared_fs", action="store_false",
                         help="ray: the workers do not see the driver's disk; trials run in their temp folder")

    p_report = sub.add_parser("report", help="aggregate a sweep's folder into report.md and report.csv")
    p_report.add_argument("folder", help="the results folder of a sweep (its sweep.toml says the kind of its runs)")
    p_recal = sub.add_parser("recalibrate", help="refit each finished noisy run's temperature on its validation "
                                                  "split's true labels (resmooth.lab.recalibration)")
    p_recal.add_argument("folder", help="the results folder of a sweep with label noise, its runs' checkpoints kept")
    p_recal.add_argument("--data-root", help="where the dataset is, when not where the runs read it")
    p_recal.add_argument("--overwrite", action="store_true", help="refit runs that have a clean_temperature.json")
    for command in (p_train, p_sweep, p_report, p_recal):
        command.set_defaults(flags=_flags(command))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.out is None and (args.resume or args.overwrite):
        parser.error(f"{'--resume' if args.resume else '--overwrite'} needs --out, the folder of the run")
    try:
        # The library's errors name its arguments: here, the flags that the user typed.
        with flags(args.flags):
            if args.command == "train":
                config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
                if args.resume and not any((Path(args.out) / name).exists() for name in (CHECKPOINT, "summary.json")):
                    # Not an error: a script may pass --resume to every run, started or not (as a sweep
                    # resumes each of its runs); but whoever meant to continue a run learns that it does not.
                    print(f"note: --resume: there is no {Path(args.out) / CHECKPOINT} to continue from, so the run "
                          "starts from scratch", file=sys.stderr)
                data = load_run_data(config, download=True) if args.download else None
                summary = train(config, args.out, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, data=data)
                # The figures; the config and the reliability diagrams (dicts) are in summary.json.
                shown = {k: v for k, v in summary.items() if not isinstance(v, dict)}
                print(json.dumps(shown, indent=2))
            elif args.command == "sweep":
                from .report import report
                from .sweep import run_sweep

                ray_options = {}
                if args.executor == "ray":
                    ray_options = dict(address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                                       max_retries=args.max_retries, shared_fs=args.shared_fs)
                out = run_sweep(args.file, args.out, quiet=args.quiet, data_root=args.data_root, device=args.device,
                                executor=args.executor, download=args.download, settings=args.settings, **ray_options)
                print(report(out))
            elif args.command == "recalibrate":
                from .recalibration import refit_folder

                written = refit_folder(args.folder, args.data_root, overwrite=args.overwrite)
                print(f"runs refitted: {len(written)}")
            else:
                from .report import report

                print(report(args.folder))
    except (ValueError, TypeError, ImportError, ConnectionError, FileNotFoundError, RunExistsError, NonFiniteLossError,
            FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

