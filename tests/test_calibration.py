"""Calibration measures against hand computations (resmooth.lab.calibration), and in a run's files."""

import json
import math

import pytest
import torch

from resmooth.lab.calibration import BINS, brier, calibration, ece, fit_temperature, nll, reliability
from resmooth.lab.config import Config
from resmooth.lab.metrics import CALIBRATION, RELIABILITY
from resmooth.lab.train import train


def two_class(p_first: list[float]) -> torch.Tensor:
    """Logits whose softmax gives the first class probability p exactly: (log p - log(1 - p), 0)."""
    p = torch.tensor(p_first, dtype=torch.float64)
    return torch.stack([p.log() - (1 - p).log(), torch.zeros_like(p)], 1)


def test_nll_and_brier_of_a_known_case():
    logits, target = two_class([0.9, 0.9]), torch.tensor([0, 1])
    assert nll(logits, target) == pytest.approx((-math.log(0.9) - math.log(0.1)) / 2, rel=1e-12)
    # (0.1^2 + 0.1^2) for the right answer, (0.9^2 + 0.9^2) for the wrong one.
    assert brier(logits, target) == pytest.approx((0.02 + 1.62) / 2, rel=1e-12)


def test_ece_reads_the_gap_per_bin_not_per_sample():
    # Bin (13/15, 14/15]: confidences 0.90 (right) and 0.88 (wrong): accuracy 1/2 against a mean
    # confidence of 0.89. Bin (8/15, 9/15]: 0.55 and 0.58, both right: 1 against 0.565.
    logits = two_class([0.90, 0.88, 0.55, 0.58])
    target = torch.tensor([0, 1, 0, 0])
    expected = 2 / 4 * abs(0.5 - 0.89) + 2 / 4 * abs(1.0 - 0.565)
    assert ece(logits, target) == pytest.approx(expected, rel=1e-12)
    # One bin pools all four: |3/4 - 0.7275|; the per-sample mean gap would be another number.
    assert ece(logits, target, bins=1) == pytest.approx(abs(0.75 - (0.90 + 0.88 + 0.55 + 0.58) / 4), rel=1e-12)
    # A confidence on a bin's upper edge belongs to that bin: 0.6 = 9/15 falls in (8/15, 9/15].
    assert ece(two_class([0.6, 0.58]), torch.tensor([0, 0])) == pytest.approx(1 - 0.59, rel=1e-12)
    assert BINS == 15


def test_the_reliability_diagram_holds_each_bins_count_confidence_and_accuracy():
    # The case of the ECE test: bin 13 (13/15, 14/15] holds 0.90 (right) and 0.88 (wrong), bin 8
    # (8/15, 9/15] holds 0.55 and 0.58 (both right); the other thirteen bins are empty.
    logits = two_class([0.90, 0.88, 0.55, 0.58])
    target = torch.tensor([0, 1, 0, 0])
    diagram = reliability(logits, target)
    assert diagram["count"] == [0] * 8 + [2] + [0] * 4 + [2] + [0]
    assert diagram["confidence"][13] == pytest.approx(0.89, rel=1e-12)
    assert diagram["confidence"][8] == pytest.approx(0.565, rel=1e-12)
    assert diagram["accuracy"][13] == 0.5 and diagram["accuracy"][8] == 1.0
    assert [i for i, a in enumerate(diagram["accuracy"]) if a is None] == [*range(8), *range(9, 13), 14]
    # The ECE is the diagram's weighted gap.
    gap = sum(n * abs(a - c) for n, a, c in zip(diagram["count"], diagram["accuracy"], diagram["confidence"]) if n)
    assert gap / 4 == pytest.approx(ece(logits, target), rel=1e-12)
    assert len(reliability(logits, target, bins=4)["count"]) == 4
    with pytest.raises(ValueError, match="bins must be >= 1"):
        reliability(logits, target, bins=0)


def test_a_perfectly_calibrated_set_has_no_gap():
    # Confidence 0.75 with three of four right, in every bin used.
    logits = two_class([0.75] * 4 + [0.5] * 2)
    target = torch.tensor([0, 0, 0, 1, 0, 1])
    assert ece(logits, target) == pytest.approx(0.0, abs=1e-12)


def test_the_fitted_temperature_is_the_exact_one():
    # Every sample has logits (1, 0), three of four are of class 0: the best probability is 3/4,
    # softmax(z / T)_0 = sigmoid(1 / T) = 3/4, so 1 / T = log 3.
    logits = torch.tensor([[1.0, 0.0]] * 4)
    target = torch.tensor([0, 0, 0, 1])
    assert fit_temperature(logits, target) == pytest.approx(1 / math.log(3), rel=1e-10)
    # Scaling the logits by c scales the temperature by c; M = 3 classes.
    three = torch.tensor([[2.0, 0.0, 0.0]] * 6)
    labels = torch.tensor([0, 0, 0, 0, 1, 2])  # p_0 = 2/3: e^(2 beta) / (e^(2 beta) + 2) = 2/3, beta = log(4) / 2
    assert fit_temperature(three, labels) == pytest.approx(2 / math.log(4), rel=1e-10)
    # An overconfident set is cooled (T > 1), an underconfident one heated (T < 1).
    assert fit_temperature(torch.tensor([[9.0, 0.0]] * 4), target) > 1
    assert fit_temperature(torch.tensor([[0.1, 0.0]] * 4), target) < 1


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"logits must be \(N, M\)"):
        nll(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one sample"):
        ece(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_a_run_records_calibration_per_evaluation_and_temperature_at_the_end(tmp_path):
    config = Config(dataset="digits", model="resnet20", batch_size=64, device="cpu", epochs=2, method="sgd",
                    val_fraction=0.2)
    summary = train(config, tmp_path, quiet=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert {"test_nll", "test_brier", "test_ece"} <= record.keys()
        assert 0 <= record["test_ece"] <= 1 and 0 <= record["test_brier"] <= 2 and record["test_nll"] > 0
    assert "temperature" not in records[0] and records[-1]["temperature"] > 0
    # The summary carries the last epoch's figures under final_.
    for key in CALIBRATION:
        assert summary[f"final_{key}"] == records[-1][key]
    assert summary["temperature"] == records[-1]["temperature"]
    # The last epoch's reliability diagrams, before and after the temperature, over the whole test
    # set: the bins' correct answers add up to the test accuracy (a temperature moves no argmax).
    assert RELIABILITY[0] not in records[0]
    for key in RELIABILITY:
        diagram = records[-1][key]
        assert summary[f"final_{key}"] == diagram
        correct = sum(n * a for n, a in zip(diagram["count"], diagram["accuracy"]) if n)
        assert 100 * correct / sum(diagram["count"]) == pytest.approx(records[-1]["test_acc"], rel=1e-9)
    # Without a validation split there is nothing to fit the temperature on.
    plain = train(Config(dataset="digits", model="resnet20", batch_size=64, device="cpu", epochs=1, method="sgd"),
                  quiet=True)
    assert "final_test_ece" in plain and "temperature" not in plain and "final_test_ece_scaled" not in plain


def test_calibration_names_carry_the_prefix():
    logits, target = two_class([0.9]), torch.tensor([0])
    assert set(calibration(logits, target, "val_")) == {"val_nll", "val_brier", "val_ece"}
