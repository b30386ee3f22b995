"""The package outside the checkout: a wheel and an sdist, installed into fresh virtual environments.

One environment sees everything this interpreter has (the lab, its command line); another sees torch
and torch's own requirements only, as `pip install resmooth` leaves a user: the loss works there, and
the lab says which extra it needs.
"""

import re
import site
import subprocess
import sys
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def readme_library_snippet() -> str:
    """The first python block of README.md's section "The library"."""
    section = (ROOT / "README.md").read_text().split("## The library", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The wheel and the sdist, built from a copy of the checkout's packaged files."""
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    for path in (ROOT / "resmooth").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            target = source / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    out = tmp / "dist"
    # --no-isolation: the build backend of this environment, no download.
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True)
    return out


def fresh_venv(env_dir: Path, *paths: str) -> Path:
    """A virtual environment without pip whose site-packages also sees ``paths`` (through a .pth file)."""
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "runner.pth").write_text("\n".join(paths) + "\n")
    return python


def requirement_closure(name: str) -> list[metadata.Distribution]:
    """``name``'s distribution and everything it requires on this platform, recursively (no extras)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path, dist):
    (wheel,) = dist.glob("resmooth-*.whl")
    (sdist,) = dist.glob("resmooth-*.tar.gz")
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], check=True,
                   capture_output=True)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"resmooth", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"resmooth/lab/models/__init__.py", "resmooth/__main__.py", "resmooth/py.typed"} <= set(names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    env_dir = tmp_path / "venv"
    # torch and the rest from this interpreter, without its .pth files (the editable install's finder).
    python = fresh_venv(env_dir, *site.getsitepackages())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
                   check=True, capture_output=True)
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: the checkout is not on the path
    check = ("import pathlib, sys, resmooth; p = pathlib.Path(resmooth.__file__).resolve();"
             f"assert p.is_relative_to(pathlib.Path({str(env_dir.resolve())!r})), p;"
             "assert not any(pathlib.Path(e).resolve() == pathlib.Path(" + repr(str(ROOT)) + ") for e in sys.path if e);"
             "print(resmooth.__version__)")
    result = subprocess.run([python, "-c", check], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == wheel.name.split("-")[1]
    snippet = subprocess.run([python, "-c", readme_library_snippet()], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert snippet.returncode == 0, snippet.stderr
    for command, expected in ((["--help"], "train"), (["train", "--help"], "adaptive-wd")):
        cli = subprocess.run([env_dir / "bin" / "resmooth", *command], cwd=tmp_path, env=clean, capture_output=True, text=True)
        assert cli.returncode == 0 and expected in cli.stdout, cli.stderr


@pytest.mark.slow
def test_the_loss_installs_with_torch_alone(tmp_path, dist):
    (wheel,) = dist.glob("resmooth-*.whl")
    # A folder that holds torch and its own requirements only (links into this interpreter's
    # site-packages): what `pip install resmooth` leaves beside the package.
    only_torch = tmp_path / "only-torch"
    only_torch.mkdir()
    closure = requirement_closure("torch")
    for installed in closure:
        for top in {f.parts[0] for f in installed.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            source = Path(installed.locate_file(top))
            if not (only_torch / top).exists() and not top.endswith(".pth"):
                (only_torch / top).symlink_to(source)
    assert not {"torchvision", "numpy", "tqdm", "sklearn"} & {p.name for p in only_torch.iterdir()}
    env_dir = tmp_path / "venv"
    python = fresh_venv(env_dir, str(only_torch))
    # No --no-deps and no index: pip must find every requirement of the wheel already there.
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--quiet",
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    loss = subprocess.run([python, "-c", "import resmooth, torch; criterion = resmooth.ResidualSmoothingLoss(total_steps=2);"
                           "z = torch.randn(4, 3, requires_grad=True); criterion(z, torch.tensor([0, 1, 2, 0])).backward();"
                           "print(type(criterion).__name__, z.grad.shape)"],
                          cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert loss.returncode == 0, loss.stderr
    assert loss.stdout.split() == ["ResidualSmoothingLoss", "torch.Size([4,", "3])"]
    snippet = subprocess.run([python, "-c", readme_library_snippet()], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert snippet.returncode == 0, snippet.stderr
    # The lab, imported or run, names the extra it needs.
    lab = subprocess.run([python, "-c", "import resmooth.lab.train"], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert lab.returncode != 0 and "pip install 'resmooth[train]'" in lab.stderr, lab.stderr
    assert "MissingExtraError" in lab.stderr and "missing: numpy, torchvision, tqdm, sklearn" in lab.stderr
    cli = subprocess.run([env_dir / "bin" / "resmooth", "train", "--help"], cwd=tmp_path, env=clean, capture_output=True,
                         text=True)
    assert cli.returncode == 2 and "pip install 'resmooth[train]'" in cli.stderr and "Traceback" not in cli.stderr
