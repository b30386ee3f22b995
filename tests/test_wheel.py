"""The package outside the checkout: a wheel and an sdist, installed into a fresh virtual environment."""

import re
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_library_snippet() -> str:
    """The first python block of README.md's section "The library"."""
    section = (ROOT / "README.md").read_text().split("## The library", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    for path in (ROOT / "resmooth").rglob("*.py"):
        target = source / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    dist = tmp_path / "dist"
    # --no-isolation: the build backend of this environment, no download.
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("resmooth-*.whl")
    (sdist,) = dist.glob("resmooth-*.tar.gz")
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], check=True,
                   capture_output=True)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"resmooth", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "resmooth/models/__init__.py" in names and "resmooth/__main__.py" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # torch and the rest from this interpreter, without its .pth files (the editable install's finder).
    Path(purelib, "runner.pth").write_text("\n".join(site.getsitepackages()) + "\n")
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
