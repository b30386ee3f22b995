"""Sweeps on a local Ray cluster: the same report as the local executor, and a killed worker."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'resmooth[ray]')")

from resmooth.lab.cluster import trial_folder  # noqa: E402
from resmooth.lab.report import collect, report  # noqa: E402
from resmooth.lab.sweep import run_sweep  # noqa: E402

pytestmark = pytest.mark.ray

SWEEP = """
name = "ray-tiny"
trials = 2
[base]
dataset = "digits"
epochs = {epochs}
batch_size = 64
device = "cpu"
[[grid]]
method = ["sgd"]
[[grid]]
method = ["resmooth"]
"""


def test_a_missing_cluster_is_named(tmp_path):
    # First in the file: no cluster is up in this process yet.
    from resmooth.lab.cluster import run_on_ray
    from resmooth.lab.config import Config

    assert not ray.is_initialized()
    with pytest.raises(ConnectionError, match="could not reach the Ray cluster at 'ray://127.0.0.1:1'"):
        run_on_ray([("x", Config(dataset="digits", epochs=1))], tmp_path, address="ray://127.0.0.1:1", quiet=True)
    assert not ray.is_initialized()



@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sweep_file(tmp_path, epochs):
    path = tmp_path / f"tiny-{epochs}.toml"
    path.write_text(SWEEP.format(epochs=epochs))
    return path


def without_time(folder):
    groups = collect(folder)
    return {
        setting: sorted(
            ({k: v for k, v in r.items() if k not in ("seconds", "threads")} for r in runs), key=lambda r: r["seed"]
        )
        for setting, runs in groups.items()
    }


def test_ray_sweep_reports_what_the_local_sweep_reports(tmp_path, cluster):
    file = sweep_file(tmp_path, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task with one CPU: the kernels, and so the numbers, depend on it
    try:
        local = run_sweep(file, tmp_path / "local", quiet=True)
    finally:
        torch.set_num_threads(threads)
    remote = run_sweep(file, tmp_path / "ray", quiet=True, executor="ray")
    assert without_time(remote) == without_time(local)
    strip = lambda text: text.replace("# ray-tiny", "").strip()  # noqa: E731
    assert strip(report(remote, write=False)) == strip(report(local, write=False))
    # Finished trials are skipped: a second run submits nothing and changes nothing.
    stamps = sorted(p.stat().st_mtime_ns for p in remote.glob("*/seed-*/summary.json"))
    run_sweep(file, remote, quiet=True, executor="ray")
    assert sorted(p.stat().st_mtime_ns for p in remote.glob("*/seed-*/summary.json")) == stamps


def test_without_a_shared_file_system_the_driver_writes_the_files(tmp_path, cluster):
    out = run_sweep(sweep_file(tmp_path, 1), tmp_path / "driver", quiet=True, executor="ray", shared_fs=False)
    summaries = sorted(out.glob("*/seed-*/summary.json"))
    assert len(summaries) == 4
    # The trial ran elsewhere: no checkpoint lands in the driver's folder, only the result files;
    # the checkpoints are in the workers' own folders.
    assert not list(out.glob("*/seed-*/checkpoint.pt"))
    for path in summaries:
        name = path.parent.relative_to(out).as_posix()
        assert (trial_folder(str(out.resolve()), name, shared_fs=False) / "checkpoint.pt").exists()
    assert all(len((p.parent / "metrics.jsonl").read_text().splitlines()) == 1 for p in summaries)


def parent(pid: int) -> int:
    # /proc/PID/stat: "pid (name) state ppid ..."; the name may hold spaces, so split after it.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def trial_processes():
    """PIDs of this test's Ray workers running a trial (Ray titles them ray::run_trial).

    Only the workers of the cluster this process started: their parent is its raylet, whose
    parent is this process. Another sweep on the same machine (a study running on Ray beside
    the tests) has workers of the same title, and they are not this test's to kill.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::run_trial") and parent(parent(int(entry.name))) == os.getpid():
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def test_a_killed_worker_is_retried_and_every_trial_lands_once(tmp_path, cluster):
    out = tmp_path / "killed"
    killed = []

    def kill_one_mid_trial():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            # A trial with its first epoch on disk and more to go: kill its worker.
            if any(len(p.read_text().splitlines()) >= 1 for p in out.glob("*/seed-*/metrics.jsonl")):
                for pid in trial_processes():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_mid_trial)
    killer.start()
    run_sweep(sweep_file(tmp_path, 4), out, quiet=True, executor="ray", max_retries=2)
    killer.join()
    assert killed, "no worker was killed: the test did not test anything"
    summaries = sorted(out.glob("*/seed-*/summary.json"))
    assert len(summaries) == 4
    for path in summaries:
        epochs = [json.loads(line)["epoch"] for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3, 4]
        assert json.loads(path.read_text())["epochs"] == 4


def test_a_diverging_trial_is_recorded_and_the_others_finish(tmp_path, cluster):
    file = sweep_file(tmp_path, 1)
    file.write_text(file.read_text() + '[[grid]]\nmethod = ["sgd"]\nactivation = ["identity"]\nlr = [1000.0]\n')
    out = run_sweep(file, tmp_path / "ray", quiet=True, executor="ray", shared_fs=False)
    records = sorted(out.glob("*/seed-*/diverged.json"))
    assert [p.parent.relative_to(out).as_posix() for p in records] == [
        "method=sgd,activation=identity,lr=1000/seed-0", "method=sgd,activation=identity,lr=1000/seed-1"]
    assert all(json.loads(p.read_text())["epoch"] == 1 for p in records)
    assert len(list(out.glob("*/seed-*/summary.json"))) == 4
