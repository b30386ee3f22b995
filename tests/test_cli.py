"""The command line: every option says what it is."""

import argparse
import re

import pytest

from resmooth.lab.cli import build_parser
from resmooth.lab.train import METHODS


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

    train = {a.dest: a for a in subcommand("train")._actions}
    for field in dataclasses.fields(DiffusivityMap):
        assert train[field.name].default == field.default
        assert train[field.name].help.startswith("resmooth, sgd-rescaled: " + field.metadata["help"])
    assert tuple(train["scheme"].choices) == ("global", "local", "full")
