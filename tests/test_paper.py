"""The paper's cells and the readings of its annealing's time: the table beside the paper's chooses
within one reading, and the screen's runs are no cell of the paper's."""

import pytest

from resmooth.lab.config import Config
from resmooth.lab.paper import paper_cell, reading
from resmooth.lab.report import paper_comparison

REGIME = dict(subset=0.125, val_size=2500, epochs=48, weight_decay=1e-3)


def config(**fields):
    return Config(**{**REGIME, **fields}).to_dict()


@pytest.mark.parametrize(
    "fields,expected",
    [
        (dict(method="sgd"), None),
        (dict(method="label-smoothing"), None),
        (dict(method="resmooth", scheme="local", s=0.5), None),  # a constant scale: no time to read
        (dict(method="resmooth", b=0.9), "A"),
        (dict(method="resmooth", b=1.7), "A"),
        (dict(method="resmooth", distribution="logistic", b=0.5), "A"),
        (dict(method="sgd-rescaled", b=0.9), "A"),
        (dict(method="resmooth", b=0.01875), "C"),  # 0.9 epochs of 48
        (dict(method="resmooth", b=0.035416666666666666), "C"),  # 1.7 epochs of 48, as the sweep file writes it
        (dict(method="resmooth", b=0.5 / 48, mu=0.75 / 48), "B"),  # t in epochs: the peak at epoch 0.75
        (dict(method="resmooth", b=0.05), "other"),  # 2.4 epochs: in neither unit's range
        (dict(method="resmooth", b=3.0), "other"),
        (dict(method="resmooth", b=0.9, epochs=4), "A"),  # 3.6 epochs: (A) only
        (dict(method="resmooth", b=0.3, epochs=4), "A"),  # 1.2 epochs too: the library's reading wins
    ],
)
def test_a_runs_reading_is_told_by_the_unit_of_its_b(fields, expected):
    assert reading(config(**fields)) == expected


def runs(setting_config, accuracy, seeds=(0, 1, 2)):
    return [{"config": {**setting_config, "seed": k}, "max_test_acc": accuracy + k / 10,
             "last10_mean_test_acc": accuracy + k / 10 - 0.05} for k in seeds]


def test_the_table_beside_the_papers_chooses_within_one_reading():
    groups = {
        "method=sgd": runs(config(method="sgd"), 89.0),
        "method=resmooth,b=0.9": runs(config(method="resmooth", b=0.9), 89.1),
        "method=resmooth,b=1.3": runs(config(method="resmooth", b=1.3), 88.8),
        "method=resmooth,b=0.01875": runs(config(method="resmooth", b=0.01875), 89.3),  # the best of all, under (C)
    }
    lines = paper_comparison("table2", groups)
    laplace = [line for line in lines if line.startswith("| 0.125 / full / laplace")]
    assert [line.split(" | ")[0] for line in laplace] == ["| 0.125 / full / laplace (reading A)",
                                                          "| 0.125 / full / laplace (reading C)"]
    assert laplace[0].split(" | ")[5] == "method=resmooth,b=0.9" and laplace[1].split(" | ")[5] == "method=resmooth,b=0.01875"
    assert "within one reading of the annealing's time" in "\n".join(lines)
    assert any(line.startswith("| 0.125 / sgd / 0.001 | 89.79 |") for line in lines)
    # Under the book's reading alone, the table is as it was: no reading named.
    del groups["method=resmooth,b=0.01875"]
    lines = paper_comparison("table2", groups)
    laplace = [line for line in lines if line.startswith("| 0.125 / full / laplace")]
    assert len(laplace) == 1 and laplace[0].startswith("| 0.125 / full / laplace | 90.12 |")
    assert laplace[0].split(" | ")[5] == "method=resmooth,b=0.9" and "reading" not in "\n".join(lines)


@pytest.mark.parametrize("fields", [dict(pad=2), dict(shortcut="B")])
def test_the_screens_runs_are_no_cell_of_the_papers(fields):
    assert paper_cell("table2", config(method="sgd")) == (0.125, "sgd", 1e-3)
    assert paper_cell("table2", config(method="sgd", **fields)) is None
    assert paper_cell("table2", config(method="resmooth", b=0.9, **fields)) is None
    # An older summary, from before the fields, reads as the book's input and network.
    old = {k: v for k, v in config(method="sgd").items() if k not in ("pad", "shortcut")}
    assert paper_cell("table2", old) == (0.125, "sgd", 1e-3)
    # The held-out split and the ratio change no cell's network: 1/4 is its own cell.
    assert paper_cell("table2", config(method="sgd", val_size=20000)) == (0.125, "sgd", 1e-3)
    assert paper_cell("table2", config(method="sgd", subset=0.25)) == (0.25, "sgd", 1e-3)
