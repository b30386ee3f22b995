#!/usr/bin/env python3
"""Does the loss room (``resmooth``, not ``resmooth.lab``) work on a given torch release?

    python3 scripts/check_torch.py 2.4.1 [--cache DIR] [--only CHECK ...]

The release is installed from PyPI into a virtual environment of its own, DIR/<version> (DIR is
``$RESMOOTH_TORCH_CACHE``, else /tmp/resmooth-torch), created on the first run and reused after.
Run with Python 3.11 or later (the project's ``requires-python``); the environment uses the
interpreter that runs this script. The checkout that holds this script is installed there in
editable mode without its requirements at every run, so the checks test its code as it is now,
uncommitted edits too.

The environment holds torch, what torch needs to import on a CPU, and what the loss room's tests
import (pytest, hypothesis, numpy, scipy). torch is installed with ``--no-deps`` and then its own
requirements without the nvidia-* and triton packages (gigabytes, needed on a GPU only); where
torch does not import without them, they are installed too. Where torch's numpy interop fails
with the newest numpy (a torch built against numpy 1.x), numpy<2 is installed, as a user of that
torch would have to.

The checks, one line each, and the exit status is non-zero when any fails:

- ``eager``: the loss room's tests (those that need torch and ``resmooth`` alone, TESTS below);
  the CUDA tests skip themselves where there is no GPU.
- ``compile-classes``, ``compile-dense``: ``torch.compile(criterion, fullgraph=True)`` with the
  default backend and the criterion's default arguments, on (N, M) logits with class indices and
  with a dense (N, M) target, each equal to the eager criterion.
- ``compile-progress``: a float ``progress=`` over many values compiles two graphs (the first
  value, then one recompilation that makes it an input), counted with a counting backend.
- ``readme``: README.md's first python block (the training loop of "The library"), read as
  tests/test_wheel.py reads it.

README.md's "Which torch" holds the results of the releases run and the floor that
pyproject.toml declares: the lowest release that passes every check. After a run that changes
them, update the table and the floor; tests/test_which_torch.py holds the two to agree, and
TESTS below to the loss room's test files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("RESMOOTH_TORCH_CACHE", "/tmp/resmooth-torch"))
# The test files that import torch and `resmooth` alone (not resmooth.lab, torchvision, mypy or
# the integrations), plus what the tests themselves use.
TESTS = ["tests/test_loss.py", "tests/test_smoothing.py", "tests/test_diffusion.py", "tests/test_distributed.py",
         "tests/test_doctests.py"]
# A test of the lab's checkpoints kept in tests/test_loss.py: it needs the `train` extra.
LAB_TESTS = ["tests/test_loss.py::test_the_trainers_checkpoints_of_before_still_load"]
TEST_REQUIREMENTS = ["pytest", "hypothesis", "numpy", "scipy"]
# Seconds after which a test or a compile check is taken to hang, and the limit for all the tests.
TEST_TIMEOUT, EAGER_TIMEOUT = 600, 2400
# Shared by every check: the tests' thread count, and the shapes and progress values of the
# compile checks (more values than dynamo's default cache size limit of 8 graphs per frame).
PRELUDE = """
import sys, torch
sys.path.insert(0, "tests")
torch.set_num_threads(2)
N, M = 16, 10
PROGRESS = [k / 20 for k in range(1, 20)]
"""
CHECKS = {
    "compile-classes": """
from resmooth import ResidualSmoothingLoss
g = torch.Generator().manual_seed(0)
z, y = torch.randn(N, M, generator=g), torch.randint(0, M, (N,), generator=g)
criterion = ResidualSmoothingLoss(total_steps=4)
compiled = torch.compile(criterion, fullgraph=True)
torch.testing.assert_close(compiled(z, y), criterion(z, y))
print("equal to eager")
""",
    "compile-dense": """
from resmooth import ResidualSmoothingLoss
g = torch.Generator().manual_seed(0)
z, y = torch.randn(N, M, generator=g), torch.rand(N, M, generator=g)
criterion = ResidualSmoothingLoss(total_steps=4)
compiled = torch.compile(criterion, fullgraph=True)
torch.testing.assert_close(compiled(z, y), criterion(z, y))
print("equal to eager")
""",
    "compile-progress": """
from resmooth import ResidualSmoothingLoss
graphs = []
def backend(gm, example_inputs):
    graphs.append(gm)
    return gm.forward
g = torch.Generator().manual_seed(0)
criterion = ResidualSmoothingLoss()
compiled = torch.compile(criterion, fullgraph=True, backend=backend)
for t in PROGRESS:
    z, y = torch.randn(N, M, generator=g), torch.randint(0, M, (N,), generator=g)
    torch.testing.assert_close(compiled(z, y, progress=t), criterion(z, y, progress=t))
assert len(graphs) == 2, f"{len(graphs)} graphs over {len(PROGRESS)} progress values; expected 2 (one recompilation)"
print(f"{len(graphs)} graphs over {len(PROGRESS)} values, each equal to eager")
""",
    "readme": """
from test_wheel import readme_library_snippet
exec(compile(readme_library_snippet(), "README.md (The library)", "exec"), {})
print("ran")
""",
}


def run(command: list[str], timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``command``'s result; past ``timeout`` seconds it is killed with its children (a DDP rank
    that waits for a dead peer) and its return code is None."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return subprocess.CompletedProcess(command, None, stdout, stderr)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def pip(python: Path, *args: str) -> None:
    result = run([str(python), "-m", "pip", "install", "--quiet", *args])
    if result.returncode:
        sys.exit(f"pip install {' '.join(args)} failed:\n{result.stderr}")


def fails(python: Path, code: str) -> str:
    """The last line of the error that ``code`` raises in ``python``, or "" when it runs."""
    result = run([str(python), "-c", code])
    return (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[-1] if result.returncode else ""


def environment(version: str, cache: Path) -> tuple[Path, list[str]]:
    """The virtual environment of torch ``version`` (made if missing) and what it took."""
    env_dir = cache / version
    python = env_dir / "bin" / "python"
    stamp = env_dir / "check-torch.json"
    if stamp.exists():
        return python, json.loads(stamp.read_text())["notes"]
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(env_dir)
    notes = []
    pip(python, "--no-deps", f"torch=={version}")
    requires = run([str(python), "-c", "from importlib import metadata; print('\\n'.join(metadata.requires('torch')))"]
                   ).stdout.splitlines()
    gpu_only = re.compile(r"^(nvidia-|triton)", re.I)
    cpu = [r for r in requires if not gpu_only.match(r) and "extra ==" not in r]
    pip(python, *cpu, *TEST_REQUIREMENTS)
    error = fails(python, "import torch; torch.randn(2)")
    if error:
        pip(python, f"torch=={version}")  # with its nvidia-* and triton requirements
        notes.append(f"nvidia-* installed, as without them: {error}")
    error = fails(python, "import numpy, torch; torch.from_numpy(numpy.zeros(2))")
    if error:
        pip(python, "numpy<2", "scipy")
        notes.append(f"numpy<2, as with numpy 2: {error}")
    installed = run([str(python), "-c", "import torch, numpy; print(torch.__version__, numpy.__version__)"]).stdout.split()
    notes.insert(0, f"torch {installed[0]}, numpy {installed[1]}")
    stamp.write_text(json.dumps({"notes": notes}) + "\n")
    return python, notes


def last_error(output: str) -> str:
    """What went wrong: the tests that failed and their distinct errors, else a traceback's last line."""
    lines = [line for line in output.splitlines() if line.strip()]
    failed = [line.split(" - ", 1) for line in lines if line.startswith(("FAILED ", "ERROR "))]
    if failed:
        names = [f[0].split(" ", 1)[1].split("::", 1)[-1] for f in failed]
        errors = list(dict.fromkeys(f[1][:200] for f in failed if len(f) > 1))
        more = ", ..." if len(names) > 6 else ""
        return f"{len(failed)} failed: {', '.join(names[:6])}{more}; {' | '.join(errors[:4])}"
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Unsupported)\b", line)]
    return (errors or lines or ["no output"])[-1][:400]


def hung_test(output: str) -> str:
    """The test that pytest's faulthandler found running past its timeout (the innermost test frame)."""
    frames = re.findall(r'File "[^"]*/(tests/test_\w+\.py)", line \d+ in (\w+)', output)
    return "::".join(frames[-1]) if frames else "unknown test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="a torch release on PyPI, e.g. 2.4.1")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where the environments live ({DEFAULT_CACHE})")
    parser.add_argument("--only", nargs="+", choices=["eager", *CHECKS], help="run these checks alone")
    args = parser.parse_args()
    python, notes = environment(args.version, args.cache)
    print(f"torch {args.version}: {python.parent.parent} ({'; '.join(note[:160] for note in notes)})", flush=True)
    # The checkout, editable and without its requirements: `import resmooth` reads this code, and
    # its version from the checkout's pyproject.toml (re-installed at every run, as another
    # checkout may have run this script on the same environment).
    pip(python, "--no-deps", "--editable", str(ROOT))
    env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "300"}  # pytest's summary lines unshortened
    failed = 0
    for name in args.only or ["eager", *CHECKS]:
        if name == "eager":
            # faulthandler prints the stack of a test that runs past TEST_TIMEOUT (a hang), which
            # names it when the whole run is killed at EAGER_TIMEOUT.
            command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
                       f"faulthandler_timeout={TEST_TIMEOUT}", *TESTS, *(f"--deselect={test}" for test in LAB_TESTS)]
            timeout = EAGER_TIMEOUT
        else:
            command = [str(python), "-c", textwrap.dedent(PRELUDE) + CHECKS[name]]
            timeout = TEST_TIMEOUT
        result = run(command, timeout, cwd=ROOT, env=env)
        output = result.stdout + result.stderr
        if result.returncode is None:
            failed += 1
            where = f"; {hung_test(output)} still running" if name == "eager" else ""
            print(f"FAIL {name}: killed after {timeout} s{where}", flush=True)
        elif result.returncode == 0:
            summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
            print(f"PASS {name}: {summary}", flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {last_error(output)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
