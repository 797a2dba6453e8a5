"""Signals during a save: a process killed mid-write (SIGKILL, SIGTERM) leaves no half-written
file under the target's name, the old file intact, and the part it left is removed by the next
save into that folder; Ctrl-C removes its own part at once (issue 16, item 9)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from _datasets_helpers import small_idx_arrays, write_idx

from minidl import _atomic
from minidl.datasets import _cache, _registry, load_mnist
from minidl.networks import TwoLayerNet, load_network

from .oracle import no_partial_files, same_arrays, start_python

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

# Run in the child before its save: np.savez pauses after a few writes, saying "writing".
SLOW_SAVEZ = """
import sys, time
import numpy as np

_real_savez = np.savez


class _Slow:
    def __init__(self, f):
        self.f, self.n = f, 0

    def write(self, data):
        self.n += 1
        written = self.f.write(data)
        if self.n == 3:
            self.f.flush()
            print("writing", flush=True)
            time.sleep(120)
        return written

    def __getattr__(self, name):
        return getattr(self.f, name)


np.savez = lambda f, *a, **k: _real_savez(_Slow(f), *a, **k)
"""


def interrupted(code: str, sig: int, env: dict | None = None) -> int:
    """Run ``code`` (after SLOW_SAVEZ), send ``sig`` once it is mid-save; its return code."""
    proc = start_python(SLOW_SAVEZ + code, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "writing", (line, proc.stderr.read())
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def parts_in(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("existing", [False, True])
def test_model_save_killed_midway(tmp_path, sig, existing):
    target = tmp_path / "model.npz"
    if existing:
        old = TwoLayerNet(6, 5, 3)
        old.save(target)
    code = f"""
from minidl.networks import TwoLayerNet
TwoLayerNet(784, 300, 10).save({str(target)!r})
"""
    assert interrupted(code, sig) == -sig
    if existing:  # the old model, whole
        same_arrays(load_network(target).params, old.params)
    else:
        assert not target.exists()
    assert len(parts_in(tmp_path)) == 1  # hidden, and not under the target's name
    TwoLayerNet(4, 3, 2).save(tmp_path / "another.npz")  # the next save in that folder
    assert parts_in(tmp_path) == []
    no_partial_files(tmp_path)


def test_ctrl_c_during_a_save_removes_its_part(tmp_path):
    target = tmp_path / "model.npz"
    code = f"""
from minidl.networks import TwoLayerNet
TwoLayerNet(784, 300, 10).save({str(target)!r})
"""
    assert interrupted(code, signal.SIGINT) != 0
    assert not target.exists() and parts_in(tmp_path) == []


def test_dataset_cache_fill_killed_midway(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    write_idx(tmp_path / "data" / "mnist", arrays, gz=False)
    for name in _registry.IDX_FILES:  # the small files have no recorded checksums
        monkeypatch.delitem(_registry.CHECKSUMS, f"mnist/{name}")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "MINIDL_OFFLINE": "1"}
    code = f"""
from minidl.datasets import _registry, load_mnist
for name in _registry.IDX_FILES:
    del _registry.CHECKSUMS["mnist/" + name]
load_mnist(data_dir={str(tmp_path / "data")!r})
"""
    assert interrupted(code, signal.SIGKILL, env) == -signal.SIGKILL
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    parsed = _cache.parsed_path("mnist")
    assert not parsed.exists() and len(parts_in(parsed.parent)) == 1
    (x, t), _ = load_mnist(normalize=False, data_dir=tmp_path / "data")
    same_arrays((x, t), (arrays["x_train"].reshape(30, -1), arrays["t_train"].astype(np.uint8)))
    assert parsed.is_file() and parts_in(parsed.parent) == []
    no_partial_files(tmp_path / "cache")


def test_a_live_writers_part_is_never_taken_for_stale(tmp_path):
    # One thread is inside a save; another saves into the same folder meanwhile.
    inside, release = threading.Event(), threading.Event()
    errors = []

    def slow_writer():
        try:
            with _atomic.atomic_write(tmp_path / "slow.bin") as f:
                f.write(b"first half ")
                inside.set()
                release.wait(30)
                f.write(b"second half")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert inside.wait(30)
    TwoLayerNet(4, 3, 2).save(tmp_path / "model.npz")
    assert len(parts_in(tmp_path)) == 1  # the slow writer's, kept
    release.set()
    thread.join(30)
    assert not errors and (tmp_path / "slow.bin").read_bytes() == b"first half second half"
    assert parts_in(tmp_path) == []


def test_parts_of_the_old_pattern_and_foreign_files(tmp_path):
    old_part = tmp_path / ".model.npz.0123456789ab.part"  # minidl's name before the lock
    recent = tmp_path / ".curves.png.ba9876543210.part"
    foreign = [tmp_path / ".model.npz.part", tmp_path / "notes.part",
               tmp_path / ".x.minidl-zz.part"]
    for p in (old_part, recent, *foreign):
        p.write_bytes(b"x" * 1000)
    hour_ago = time.time() - _atomic.STALE_AFTER - 60
    os.utime(old_part, (hour_ago, hour_ago))
    TwoLayerNet(4, 3, 2).save(tmp_path / "model.npz")
    assert not old_part.exists()
    assert recent.exists() and all(p.exists() for p in foreign)  # not ours, or maybe live


def test_a_folder_with_a_part_name_is_left_alone(tmp_path):
    folder = tmp_path / ".model.npz.minidl-0123456789ab.part"
    folder.mkdir()
    TwoLayerNet(4, 3, 2).save(tmp_path / "model.npz")
    assert folder.is_dir()
