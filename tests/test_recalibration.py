"""A noisy run's temperature refitted on its validation split's true labels, from its final checkpoint."""

import json

import pytest
import torch
from scipy.optimize import minimize_scalar

from resmooth.lab.cli import main
from resmooth.lab.config import Config
from resmooth.lab.models import build_model
from resmooth.lab.recalibration import refit_clean, refit_folder
from resmooth.lab.report import collect
from resmooth.lab.runfiles import CLEAN
from resmooth.lab.train import load_run_data, train

TINY = dict(dataset="digits", model="resnet8-w8", device="cpu", subset=0.5, val_size=300, epochs=3, method="sgd")


@pytest.fixture(scope="module")
def noisy_sweep(tmp_path_factory):
    """A sweep-like folder with one finished run at label noise 0.4, its checkpoint kept."""
    folder = tmp_path_factory.mktemp("noise")
    train(Config(**TINY, label_noise=0.4), folder / "label_noise=0.4,method=sgd" / "seed-0", quiet=True)
    return folder


def nll_minimiser(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature by a bounded scalar search, not the library's Newton steps."""
    def nll(t):
        return float(torch.nn.functional.cross_entropy(logits / t, labels))

    return minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-8}).x


def test_the_clean_temperature_is_fitted_on_the_true_labels_of_the_final_network(noisy_sweep):
    run = noisy_sweep / "label_noise=0.4,method=sgd" / "seed-0"
    summary = json.loads((run / "summary.json").read_text())
    values = refit_clean(run)
    # The final network from the checkpoint, its validation logits by a plain forward pass.
    config = Config(**TINY, label_noise=0.4)
    data = load_run_data(config)
    model = build_model(config.model, data.num_classes, data.in_channels)
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    with torch.no_grad():
        logits = model.eval()(data.val_x).double()
    assert (data.val_y != data.val_true_y).any()
    assert summary["temperature"] == pytest.approx(nll_minimiser(logits, data.val_y), rel=1e-4)
    assert values["temperature_clean"] == pytest.approx(nll_minimiser(logits, data.val_true_y), rel=1e-4)
    assert values["temperature_clean"] != pytest.approx(summary["temperature"], rel=1e-3)
    assert set(values) == {"temperature_clean", "final_test_nll_scaled_clean", "final_test_brier_scaled_clean",
                           "final_test_ece_scaled_clean", "final_test_reliability_scaled_clean"}


def test_a_folder_is_refitted_once_unless_asked_and_the_command_says_so(noisy_sweep, capsys):
    run = noisy_sweep / "label_noise=0.4,method=sgd" / "seed-0"
    assert main(["recalibrate", str(noisy_sweep)]) == 0
    assert "runs refitted: 1" in capsys.readouterr().out
    first = (run / CLEAN).read_text()
    assert json.loads(first) == json.loads(json.dumps(refit_clean(run)))
    (run / CLEAN).write_text("{}\n")
    assert refit_folder(noisy_sweep, quiet=True) == []  # kept: results are not overwritten unasked
    assert (run / CLEAN).read_text() == "{}\n"
    assert refit_folder(noisy_sweep, quiet=True, overwrite=True) == [run / CLEAN]
    assert (run / CLEAN).read_text() == first
    # The study's readers see it with the run's summary.
    (record,) = collect(noisy_sweep)["label_noise=0.4,method=sgd"]
    assert record["temperature_clean"] == json.loads(first)["temperature_clean"] and "temperature" in record


def test_a_checkpoint_that_does_not_reproduce_its_summary_is_refused(noisy_sweep, tmp_path):
    run = noisy_sweep / "label_noise=0.4,method=sgd" / "seed-0"
    copy = tmp_path / "seed-0"
    copy.mkdir()
    (copy / "summary.json").write_text((run / "summary.json").read_text())
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    state["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, copy / "checkpoint.pt")
    with pytest.raises(ValueError, match="does not reproduce the run's summary"):
        refit_clean(copy)


def test_a_run_without_label_noise_is_refused_by_name(tmp_path):
    train(Config(**{**TINY, "epochs": 1}), tmp_path, quiet=True)
    with pytest.raises(ValueError, match="label_noise is 0.0 and val_size 300; a clean temperature needs"):
        refit_clean(tmp_path)
