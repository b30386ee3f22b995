"""Symmetric label noise: the flip rate, the same flips for every method of a seed, a clean test set,
and the memorisation figures on a case computed by hand."""

import math

import pytest
import torch

from resmooth.lab.config import METHODS, Config
from resmooth.lab.noise import memorisation, noisy_labels
from resmooth.lab.train import load_run_data

TINY = dict(dataset="digits", model="resnet8-w8", device="cpu", subset=0.5, val_size=300)


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("p", [0.2, 0.4])
def test_the_flip_rate_is_p_and_a_flip_is_uniform_over_the_other_classes(num_classes, p):
    n = 200_000
    true = torch.arange(n) % num_classes
    noisy = noisy_labels(true, num_classes, p, seed=0)
    changed = noisy != true
    # A flip never lands on the true class: were it drawn over all M classes, the changed fraction
    # would be p (M - 1) / M (0.36 at p = 0.4, M = 10; p / 2 at M = 2), 30 standard errors away or more.
    se = math.sqrt(p * (1 - p) / n)
    assert abs(float(changed.float().mean()) - p) < 4 * se
    # Each wrong class gets p / (M - 1) of the samples, class by class.
    for label in range(num_classes):
        mine = true == label
        counts = torch.bincount(noisy[mine & changed], minlength=num_classes).double()
        assert counts[label] == 0
        expected = int(mine.sum()) * p / (num_classes - 1)
        others = counts[torch.arange(num_classes) != label]
        assert float((others - expected).abs().max()) < 5 * math.sqrt(expected)


def test_the_flips_depend_on_the_seed_alone():
    true = torch.arange(5000) % 10
    first = noisy_labels(true, 10, 0.4, seed=3)
    torch.manual_seed(123)
    torch.rand(1000)  # any other draw of the run, before or after, changes nothing
    assert torch.equal(noisy_labels(true, 10, 0.4, seed=3), first)
    assert not torch.equal(noisy_labels(true, 10, 0.4, seed=4), first)
    # The flips at a smaller p are among those at a larger one, to the same wrong class.
    fewer = noisy_labels(true, 10, 0.2, seed=3)
    assert bool(((fewer == true) | (fewer == first)).all()) and bool((first[fewer != true] != true[fewer != true]).all())
    assert torch.equal(noisy_labels(true, 10, 0.0, seed=3), true)


def test_every_method_of_a_seed_sees_the_same_noisy_labels_and_a_clean_test_set():
    clean = load_run_data(Config(**TINY, method="sgd"))
    runs = {method: load_run_data(Config(**TINY, method=method, label_noise=0.4)) for method in METHODS}
    first = runs["sgd"]
    for method, data in runs.items():
        assert torch.equal(data.train_y, first.train_y) and torch.equal(data.val_y, first.val_y), method
        assert torch.equal(data.test_y, clean.test_y) and torch.equal(data.test_x, clean.test_x), method
        # The images, and the true labels kept beside the noisy ones, are the clean run's.
        assert torch.equal(data.train_x, clean.train_x) and torch.equal(data.train_true_y, clean.train_y), method
        assert torch.equal(data.val_true_y, clean.val_y), method
    flipped = first.train_y != clean.train_y
    assert 0.3 < float(flipped.float().mean()) < 0.5 and not torch.equal(first.val_y, clean.val_y)
    # Another seed: other flips (and another subset, as always).
    other = load_run_data(Config(**TINY, method="sgd", label_noise=0.4, seed=1))
    assert not torch.equal(other.train_y != other.train_true_y, flipped)
    # Without noise the data carry no second set of labels.
    assert clean.train_true_y is None and clean.val_true_y is None


def test_memorisation_on_a_case_computed_by_hand():
    true = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    given = torch.tensor([1, 1, 0, 0, 2, 2, 0, 1])  # samples 0, 2, 4 flipped
    predicted = torch.tensor([1, 0, 2, 0, 1, 1, 0, 2])
    # Flipped: sample 0 predicts its given label, sample 2 its true one, sample 4 its true one.
    # Clean (1, 3, 5, 6, 7): right on 3 and 6, wrong on 1, 5, 7.
    assert memorisation(predicted, given, true) == {
        "train_acc_flipped_given": pytest.approx(100 / 3),
        "train_acc_flipped_true": pytest.approx(200 / 3),
        "train_acc_clean": pytest.approx(40.0),
    }
    # No flipped sample: its two figures are left out, not NaN.
    assert memorisation(predicted, true, true) == {"train_acc_clean": pytest.approx(50.0)}


def test_bad_noise_is_refused_by_name():
    with pytest.raises(ValueError, match=r"label_noise must lie in \[0, 1\)"):
        noisy_labels(torch.zeros(3, dtype=torch.long), 10, 1.0, seed=0)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        noisy_labels(torch.zeros(3, dtype=torch.long), 1, 0.5, seed=0)
