"""The command line: every option says what it is, and every error what happened and which flag to change."""

import argparse
import re

import pytest
import torch

import resmooth
from resmooth.__main__ import main
from resmooth.lab.cli import build_parser
from resmooth.lab.runfiles import RunExistsError
from resmooth.lab.config import METHODS, Config
from resmooth.lab.train import train


def subcommand(name: str) -> argparse.ArgumentParser:
    (choices,) = [a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return choices[name]


@pytest.mark.parametrize("name", ["train", "sweep", "report"])
def test_every_option_has_help(name):
    parser = subcommand(name)
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert len(options) >= (30 if name == "train" else 1)
    for action in options:
        words = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        assert len(words.split()) >= 2, f"{name} {action.option_strings or action.dest} has no help: {action.help!r}"
    parser.format_help()  # a stray % in a help text would fail here


def test_the_train_options_say_what_they_are():
    train = {a.dest: a for a in subcommand("train")._actions}
    assert tuple(train["method"].choices) == METHODS and len(METHODS) == 9
    assert "annealing" in train["b"].help
    assert "$RESMOOTH_DATA" in train["data_root"].help
    assert train["download"].help and subcommand("sweep")._option_string_actions["--download"].help
    text = subcommand("train").format_help()
    assert "{sgd,sgd-ce,label-smoothing,label-smoothing-se,adam,adagrad,resmooth,sgd-rescaled,adaptive-wd}" in text
    assert "{softmax,sigmoid,identity}" in text  # --activation
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--method", "sgd-momentum"])


def test_the_smoothing_options_are_the_diffusivity_maps():
    import dataclasses

    from resmooth.diffusivity import DiffusivityMap
    from resmooth.lab._fields import LOSS_HELP

    train = {a.dest: a for a in subcommand("train")._actions}
    for field in dataclasses.fields(DiffusivityMap):
        assert train[field.name].default == field.default
        assert train[field.name].help.startswith("resmooth, sgd-rescaled: " + LOSS_HELP[DiffusivityMap][field.name][0])
    assert tuple(train["scheme"].choices) == ("global", "local", "full")


# A run of seconds: 8x8 digits, the narrow ResNet8, one epoch.
TINY_RUN = ["train", "--dataset", "digits", "--model", "resnet8-w8", "--epochs", "1", "--batch-size", "64", "--device",
            "cpu", "--quiet"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"resmooth {resmooth.__version__}\n"


@pytest.mark.parametrize(
    "argv,message",
    [
        (TINY_RUN + ["--method", "sgd", "--b", "0.7"],
         "--b 0.7 would be ignored: --method sgd has no residual smoothing; leave --b at its default 0.5"),
        (TINY_RUN + ["--scheme", "local", "--mu", "0.5"], "--mu 0.5 would be ignored: --scheme local has the constant scale"),
        (TINY_RUN + ["--method", "sgd-ce", "--activation", "identity"],
         "--activation identity would be ignored: --method sgd-ce is the cross-entropy"),
        (TINY_RUN + ["--device", "cuda"],
         "--device cuda was asked for, but CUDA is not available here; use --device cpu or --device auto"),
        (TINY_RUN + ["--epochs", "0"], "--epochs must be >= 1; got 0"),
        (TINY_RUN + ["--val-size", "10"], "needs --subset < 1; use --val-fraction"),
        (TINY_RUN + ["--subset", "0.01", "--val-size", "100000"],
         "--val-size 100000 exceeds the 1428 training images that --subset 0.01 leaves out"),
        (TINY_RUN + ["--pad", "-2"], "--pad must be >= 0; got -2"),
        (TINY_RUN + ["--model", "densenet-bc-100", "--shortcut", "B"],
         "--shortcut B would be ignored: --model densenet-bc-100 is not a ResNet; leave --shortcut at its default 'A'"),
        (TINY_RUN + ["--label-noise", "1"], "--label-noise must lie in [0, 1) (the probability of a flipped label); got 1.0"),
        (TINY_RUN + ["--label-noise", "-0.1"], "--label-noise must lie in [0, 1)"),
        (["sweep", "SWEEP", "--settings", "0"], "--settings must be >= 1; got 0"),
        (["sweep", "SWEEP", "--executor", "ray", "--download"], "--download applies to --executor local only"),
    ],
)
def test_errors_name_the_flags_that_the_user_typed(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sweep = tmp_path / "tiny.toml"
    sweep.write_text('name = "tiny"\n[base]\ndataset = "digits"\nepochs = 1\n')
    assert main([str(sweep) if a == "SWEEP" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    # Once the command has run, the Python API names its arguments again.
    with pytest.raises(ValueError, match=r"^b=0.7 would be ignored: method='sgd' has no residual smoothing; leave b at"):
        Config(method="sgd", b=0.7)


def test_resume_on_a_finished_run_says_so_and_how_to_train_longer(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(TINY_RUN + ["--out", out]) == 0
    summary = (tmp_path / "run" / "summary.json").read_bytes()
    assert main(TINY_RUN + ["--epochs", "2", "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out} holds a finished run (1 epoch, summary.json): there is nothing to resume. To train longer, " \
           "start a new run with more --epochs in another --out" in err
    assert err.rstrip().endswith("or pass --overwrite to replace this one")
    assert (tmp_path / "run" / "summary.json").read_bytes() == summary
    # From Python, the same words name the arguments.
    with pytest.raises(RunExistsError, match="more epochs in another out .* pass overwrite=True to replace this one"):
        train(Config(dataset="digits", model="resnet8-w8", epochs=1, batch_size=64, device="cpu"), out, resume=True)


def test_resume_without_a_checkpoint_says_that_the_run_starts_from_scratch(tmp_path, capsys):
    assert main(TINY_RUN + ["--out", str(tmp_path / "run"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"note: --resume: there is no {tmp_path / 'run' / 'checkpoint.pt'} to continue from, so the run starts " \
           "from scratch" in err
    assert (tmp_path / "run" / "summary.json").exists()
    # A run with no folder has nothing to resume, or to overwrite: an error of the command line.
    for flag in ("--resume", "--overwrite"):
        with pytest.raises(SystemExit) as exit:
            main(TINY_RUN + [flag])
        assert exit.value.code == 2 and f"{flag} needs --out" in capsys.readouterr().err


# Cut to nothing, in its header, near its end: torch's reader fails on each with another error
# (torch 2.14: EOFError, RuntimeError, OSError).
@pytest.mark.parametrize("kept", [0.0, 0.002, 0.99])
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, capsys, kept):
    torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 1}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(whole[:int(kept * len(whole))])
    assert main(TINY_RUN + ["--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'checkpoint.pt'} cannot be read: it is truncated or damaged (")
    assert err.endswith("), so the run cannot resume from it. Delete it to start the run again from scratch, or pass "
                        "--overwrite instead of --resume\n")
