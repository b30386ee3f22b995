"""The criterion in Lightning and in Hugging Face's Trainer, executed as README.md shows it:
gradient accumulation, a checkpoint and a resume, and the progress that each micro-batch reads.

One rule everywhere: ``total_steps`` counts optimizer steps and the schedule advances once per
optimizer step, so the micro-batches of one step read one progress. Each test runs the README's
class, and compares the scale that the criterion read at every micro-batch of a run that stopped at
a checkpoint and resumed with that of a run that never stopped. They need the ``integrations``
extra (``pip install '.[integrations]'``).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from resmooth import SquaredErrorLoss, annealing_scale

# Hugging Face must not reach the network: the model is built from a config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, BATCH, ACCUMULATE, EPOCHS = 16, 4, 2, 2
STEPS = EPOCHS * SAMPLES // (BATCH * ACCUMULATE)  # optimizer steps of the run: 4
# What the run that never stops reads: each optimizer step's two micro-batches, one progress.
EXPECTED = [pytest.approx(annealing_scale(k / STEPS), rel=1e-15) for k in range(STEPS) for _ in range(ACCUMULATE)]


def readme_block(name: str) -> dict:
    """The namespace of README.md's python block (section "The library") that defines ``name``."""
    section = (ROOT / "README.md").read_text().split("## The library", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if f"class {name}(" in b]
    namespace: dict = {}
    exec(compile(block, f"README.md ({name})", "exec"), namespace)
    return namespace


def dataset() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(SAMPLES, 8, generator=g), torch.randint(0, 3, (SAMPLES,), generator=g))


def test_lightning_accumulates_checkpoints_and_resumes(tmp_path):
    L = pytest.importorskip("lightning")

    class Classifier(readme_block("Classifier")["Classifier"]):
        def __init__(self) -> None:
            super().__init__(nn.Linear(8, 3))
            self.read: list[float] = []

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.read.append(float(self.criterion.last_scale))
            return loss

    def trainer(**kwargs) -> L.Trainer:
        return L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, accumulate_grad_batches=ACCUMULATE,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, **kwargs)

    def loader() -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(dataset(), batch_size=BATCH)

    whole = Classifier()
    trainer().fit(whole, loader())
    assert whole.read == EXPECTED and int(whole.criterion.steps_done) == STEPS

    class StopAfterTheFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            trainer.save_checkpoint(tmp_path / "first-epoch.ckpt")
            trainer.should_stop = True

    cut = Classifier()
    trainer(callbacks=[StopAfterTheFirstEpoch()]).fit(cut, loader())
    state = torch.load(tmp_path / "first-epoch.ckpt", weights_only=False)["state_dict"]
    assert int(state["criterion.steps_done"]) == STEPS // 2 and int(state["criterion.total_steps"]) == STEPS
    resumed = Classifier()
    trainer().fit(resumed, loader(), ckpt_path=tmp_path / "first-epoch.ckpt")
    assert cut.read + resumed.read == EXPECTED
    assert float(resumed.criterion.progress()) == 1.0 and int(resumed.criterion.total_steps) == STEPS


def test_hugging_face_trainer_accumulates_checkpoints_and_resumes(tmp_path):
    transformers = pytest.importorskip("transformers")

    class TinyClassifier(transformers.PreTrainedModel):
        config_class = transformers.PretrainedConfig

        def __init__(self, config) -> None:
            super().__init__(config)
            self.net = nn.Linear(8, 3)
            self.post_init()

        def forward(self, x, labels=None):
            return transformers.modeling_outputs.SequenceClassifierOutput(logits=self.net(x))

    class ResmoothTrainer(readme_block("ResmoothTrainer")["ResmoothTrainer"]):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.read: list[float] = []

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            loss = super().compute_loss(model, inputs, return_outputs, **kwargs)
            if model.training:
                self.read.append(float(self.criterion.last_scale))
            return loss

    class Pairs(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x, self.y = dataset().tensors

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": self.x[i], "labels": self.y[i]}

    class StopAtHalf(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == STEPS // 2:
                control.should_save = control.should_training_stop = True

    def trainer(out: str, callbacks=()) -> ResmoothTrainer:
        torch.manual_seed(0)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / out), per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUMULATE,
            num_train_epochs=EPOCHS, learning_rate=0.1, save_strategy="no", report_to="none", use_cpu=True,
            logging_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
        model = TinyClassifier(transformers.PretrainedConfig())
        return ResmoothTrainer(model=model, args=args, train_dataset=Pairs(), callbacks=list(callbacks))

    whole = trainer("whole")
    whole.train()
    assert whole.state.max_steps == STEPS and whole.read == EXPECTED
    cut = trainer("cut", [StopAtHalf()])
    cut.train()
    checkpoint = tmp_path / "cut" / f"checkpoint-{STEPS // 2}"
    assert checkpoint.is_dir()
    resumed = trainer("cut")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert cut.read + resumed.read == EXPECTED
    assert resumed.state.global_step == STEPS


# Issue 32, item 4: the two criteria swap in every documented loop, as they are.


def readme_loop() -> str:
    """README.md's first python block of "The library": the plain training loop."""
    section = (ROOT / "README.md").read_text().split("## The library", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "for epoch in range(epochs)" in b]
    return block


def with_squared_error(block: str) -> str:
    """The block with its criterion replaced by ``SquaredErrorLoss()`` (whatever the arguments of the
    residual-smoothing criterion that it builds), and nothing else changed."""
    tree = ast.parse(block)
    (assign,) = [node for node in tree.body if isinstance(node, ast.Assign)
                 and [getattr(t, "id", None) for t in node.targets] == ["criterion"]]
    assign.value = ast.parse("SquaredErrorLoss()").body[0].value
    tree.body.insert(0, ast.parse("from resmooth import SquaredErrorLoss").body[0])
    return ast.unparse(tree)


def test_the_readme_loop_runs_with_either_criterion():
    block = readme_loop()
    for code, kind in ((block, "ResidualSmoothingLoss"), (with_squared_error(block), "SquaredErrorLoss")):
        namespace: dict = {}
        torch.manual_seed(0)
        exec(compile(code, f"README.md (loop, {kind})", "exec"), namespace)
        criterion = namespace["criterion"]
        assert type(criterion).__name__ == kind and torch.isfinite(namespace["loss"])
        if kind == "ResidualSmoothingLoss":
            assert int(criterion.steps_done) == criterion.total_steps == namespace["epochs"] * len(namespace["loader"])


def test_lightning_steps_the_squared_error_as_it_is(tmp_path):
    L = pytest.importorskip("lightning")

    class Classifier(readme_block("Classifier")["Classifier"]):
        def setup(self, stage: str) -> None:
            super().setup(stage)
            self.criterion = SquaredErrorLoss()

    module = Classifier(nn.Linear(8, 3))
    before = module.model.weight.detach().clone()
    L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, accumulate_grad_batches=ACCUMULATE, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(module, torch.utils.data.DataLoader(dataset(), batch_size=BATCH))
    assert isinstance(module.criterion, SquaredErrorLoss) and not torch.equal(module.model.weight, before)


def test_hugging_face_passes_progress_to_the_squared_error(tmp_path):
    transformers = pytest.importorskip("transformers")

    class TinyClassifier(transformers.PreTrainedModel):
        config_class = transformers.PretrainedConfig

        def __init__(self, config) -> None:
            super().__init__(config)
            self.net = nn.Linear(8, 3)
            self.post_init()

        def forward(self, x, labels=None):
            return transformers.modeling_outputs.SequenceClassifierOutput(logits=self.net(x))

    class SquaredErrorTrainer(readme_block("ResmoothTrainer")["ResmoothTrainer"]):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.criterion = SquaredErrorLoss()  # its compute_loss passes progress=: accepted, ignored

    class Pairs(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x, self.y = dataset().tensors

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": self.x[i], "labels": self.y[i]}

    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "se"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUMULATE,
        num_train_epochs=EPOCHS, learning_rate=0.1, save_strategy="no", report_to="none", use_cpu=True,
        logging_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
    model = TinyClassifier(transformers.PretrainedConfig())
    before = model.net.weight.detach().clone()
    trainer = SquaredErrorTrainer(model=model, args=args, train_dataset=Pairs())
    trainer.train()
    assert trainer.state.global_step == STEPS and not torch.equal(model.net.weight, before)
