"""`predict_many` with a feature process (workers=1) against the one-process path (workers=0): the same
probabilities bit for bit, in the same order, with the same bad files, warnings and names; windows
sent in bounded messages; Ctrl-C still one line. Tiny synthetic audio through the stored tiny run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc.cli import main
from asc.errors import ConfigError, DataError

from .tiny_tau import SR

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _only_this_thread(monkeypatch):
    """The feature process is forked only when no other Python thread runs; a test runner's own
    threads (pytest-xdist's execnet) are not the program's, so they are hidden from that check here."""
    import threading

    monkeypatch.setattr(threading, "enumerate", lambda: [threading.current_thread()])


def _tone(seconds: float = 1.0, sr: int = SR, freq: float = 500.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def predictor(tiny_run):
    from asc.predict import Predictor

    return Predictor.from_run(tiny_run["run"])


def _variant(predictor, **kw):
    from asc.predict import Predictor

    return Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, **kw)


@pytest.fixture
def paths_used(monkeypatch):
    """Which path each predict_many call took, and the messages the model stage received from the
    feature process (so their sizes can be checked)."""
    import contextlib

    from asc.predict import Predictor

    record = {"pipelined": 0, "messages": []}
    original = Predictor._pipeline

    def spy(self, paths, skip_bad):
        record["pipelined"] += 1

        @contextlib.contextmanager
        def wrapped():
            with original(self, paths, skip_bad) as messages:
                def seen():
                    for message in messages:
                        record["messages"].append(message)
                        yield message
                yield seen()

        return wrapped()

    monkeypatch.setattr(Predictor, "_pipeline", spy)
    return record


def _mixed_files(tmp_path: Path) -> list[Path]:
    """Short, long (several windows), stereo, 48 kHz, constant, two bad files, a duplicate."""
    files = []

    def write(name, y, sr=SR, **kw):
        files.append(tmp_path / name)
        sf.write(files[-1], y, sr, **kw)

    write("short.wav", _tone(0.4, seed=1))
    write("long.flac", _tone(3.5, seed=2, freq=300.0))
    write("stereo.wav", np.stack([_tone(1.2, seed=3), _tone(1.2, seed=4, freq=900.0)], axis=1))
    bad_text = tmp_path / "text.wav"
    bad_text.write_text("RIFF? no")
    files.append(bad_text)
    write("fortyeight.wav", _tone(1.0, sr=48000, seed=5, freq=700.0), sr=48000, subtype="PCM_16")
    write("flat.wav", np.full(SR, 0.2, np.float32), subtype="FLOAT")
    write("empty.wav", np.zeros(0, np.float32))
    write("mid.wav", _tone(2.2, seed=6, freq=1100.0))
    files.append(files[1])  # a duplicate
    write("last.wav", _tone(1.0, seed=7, freq=1500.0))
    return files


def _run(predictor, paths, workers, **kw):
    heard = []
    predictor.warn, before = heard.append, predictor.warn
    try:
        results, bad = predictor.predict_many(paths, show_progress=False, workers=workers, **kw)
    finally:
        predictor.warn = before
    return results, bad, heard


@pytest.mark.parametrize("batch_size, hop", [(3, 0.5), (4, None)])
def test_pipelined_equals_one_process_bit_for_bit(predictor, tmp_path, paths_used, batch_size, hop):
    files = _mixed_files(tmp_path)
    p = _variant(predictor, batch_size=batch_size, hop=hop)
    serial, serial_bad, serial_heard = _run(p, files, workers=0)
    assert paths_used["pipelined"] == 0
    piped, piped_bad, piped_heard = _run(p, files, workers=1)
    assert paths_used["pipelined"] == 1
    import multiprocessing

    assert multiprocessing.active_children() == []  # the feature process ended with the call
    assert [r.name for r in piped] == [r.name for r in serial] == [
        str(tmp_path / n) for n in ("short.wav", "long.flac", "stereo.wav", "fortyeight.wav", "flat.wav",
                                    "mid.wav", "last.wav")]
    for a, b in zip(piped, serial):
        assert a.to_dict() == b.to_dict()  # every probability equal, not merely close
    assert piped_bad == serial_bad and [path for path, _ in piped_bad] == [str(tmp_path / "text.wav"),
                                                                            str(tmp_path / "empty.wav")]
    assert piped_heard == serial_heard
    assert heard_once(piped_heard, "more than once") and heard_once(piped_heard, "flat.wav")
    assert sum(len(m.owners) for m in paths_used["messages"]) == sum(len(r.windows) for r in piped)


def heard_once(heard: list[str], text: str) -> bool:
    return sum(text in line for line in heard) == 1


def test_the_first_bad_file_raises_in_both_paths(predictor, tmp_path, paths_used):
    files = _mixed_files(tmp_path)
    p = _variant(predictor, batch_size=2)  # more than one batch of windows: pipelined
    for workers in (0, 1):
        with pytest.raises(DataError, match="text.wav") as caught:
            p.predict_many(files, skip_bad=False, show_progress=False, workers=workers)
        assert "empty.wav" not in str(caught.value)
    assert paths_used["pipelined"] == 1
    # the feature process stops at the first bad file: nothing after it is decoded and sent
    sent = [i for m in paths_used["messages"] for i, *_ in m.files]
    assert sent == [0, 1, 2, 3]


def test_workers_zero_and_one_batch_of_windows_take_one_process(predictor, tmp_path, paths_used):
    files = _mixed_files(tmp_path)
    predictor.predict_many(files, show_progress=False, workers=0)
    # 13 windows and a batch of 32: the model runs once, so there is nothing to overlap
    predictor.predict_many(files, show_progress=False, workers=1)
    assert paths_used["pipelined"] == 0
    for workers in (2, -1, True, 1.0):
        with pytest.raises(ConfigError, match="--workers must be 0"):
            predictor.predict_many(files, show_progress=False, workers=workers)


def test_a_long_file_is_sent_in_messages_of_at_most_batch_size_windows(predictor, tmp_path, paths_used):
    """One file of 21 windows and a batch of 4: pipelined, in messages of at most 4 windows each."""
    import torch

    path = tmp_path / "long.wav"
    sf.write(path, _tone(3.0), SR)
    p = _variant(predictor, hop=0.1, batch_size=4)
    piped, _ = p.predict_many([path], show_progress=False, workers=1)
    assert paths_used["pipelined"] == 1
    messages = paths_used["messages"]
    sizes = [m.windows.shape[0] for m in messages]
    assert sizes == [4, 4, 4, 4, 4, 1] and len(piped[0].windows) == 21
    assert all(isinstance(m.windows, torch.Tensor) and len(m.owners) == m.windows.shape[0] for m in messages)
    assert [len(m.files) for m in messages] == [1, 0, 0, 0, 0, 0]  # the file is announced with its first
    serial, _ = p.predict_many([path], show_progress=False, workers=0)
    assert piped[0].to_dict() == serial[0].to_dict()
    assert p.predict(path).to_dict() == serial[0].to_dict()  # predict: the same bits, in this process


def test_the_first_and_last_messages_are_short(predictor, tmp_path, paths_used):
    """The model starts after 4 windows, not a whole batch, and the batches shrink as the end nears, as
    only the last forward pass has no features to overlap. A batch is cut once it holds as many windows
    as are known to follow (at least 4): 21 windows in batches of 8 go as 4, 8, 5 (4 follow), 4. Files
    of 1, 21, 1 and 1 windows in batches of 16 go as 4 (the first file and 3 windows of the long one),
    10 (10 follow: 8 of the long one, one per file after it), 5, 4 and the last file's 1."""
    path = tmp_path / "long.wav"
    sf.write(path, _tone(3.0), SR)
    p = _variant(predictor, hop=0.1, batch_size=8)
    piped, _ = p.predict_many([path], show_progress=False, workers=1)
    assert [m.windows.shape[0] for m in paths_used["messages"]] == [4, 8, 5, 4]
    serial, _ = p.predict_many([path], show_progress=False, workers=0)
    assert piped[0].to_dict() == serial[0].to_dict()

    short = [tmp_path / f"{k}.wav" for k in range(3)]
    for k, f in enumerate(short):
        sf.write(f, _tone(seed=k), SR)
    files = [short[0], path, short[1], short[2]]
    paths_used["messages"].clear()
    p = _variant(predictor, hop=0.1, batch_size=16)
    piped, _ = p.predict_many(files, show_progress=False, workers=1)
    assert [m.windows.shape[0] for m in paths_used["messages"]] == [4, 10, 5, 4, 1]
    assert [len(r.windows) for r in piped] == [1, 21, 1, 1]
    serial, _ = p.predict_many(files, show_progress=False, workers=0)
    assert [r.to_dict() for r in piped] == [r.to_dict() for r in serial]


def test_the_feature_process_is_the_default_with_two_cpus(monkeypatch):
    from asc import predict

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert predict.default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert predict.default_workers() == 0  # on one CPU the two processes would only take turns


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


def test_cli_workers_option(tiny_run, tmp_path, capsys, paths_used):
    files = _mixed_files(tmp_path)
    run = str(tiny_run["run"])
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for out, workers in ((a, "0"), (b, "1")):
        assert main(["predict", run, *map(str, files), "--out", str(out), "--skip-bad", "--workers", workers,
                     "--batch-size", "2"]) == 0
    assert _csv(a) == _csv(b) and len(_csv(a)) == 8
    assert paths_used["pipelined"] == 1
    capsys.readouterr()
    assert main(["predict", run, str(files[0]), "--out", str(a), "--workers", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers" in err[0], err


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the feature process is Linux-only")
def test_ctrl_c_with_a_feature_process_is_one_line(tiny_run, tmp_path):
    files = []
    for i in range(8):  # enough files for a feature process, at a hop that keeps it busy for a while
        files.append(str(tmp_path / f"f{i}.wav"))
        sf.write(files[-1], _tone(30.0, seed=i), SR)
    env = dict(os.environ, PYTHONPATH=str(ROOT), ASC_PROGRESS="0", PYTHONUNBUFFERED="1")
    out = tmp_path / "p.csv"
    proc = subprocess.Popen([sys.executable, "-m", "asc", "predict", str(tiny_run["run"]), *files,
                             "--out", str(out), "--hop", "0.02", "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not _children(proc.pid) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "no feature process was started"
    time.sleep(0.5)  # decoding and computing features now
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "asc predict: interrupted", err
    assert not out.exists()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_failure_in_the_feature_process_is_raised_here_as_it_was(predictor, tmp_path, paths_used,
                                                                   monkeypatch):
    import multiprocessing

    from asc.predict import Predictor

    files = _mixed_files(tmp_path)

    def broken(self, segments):  # inherited by the forked feature process
        raise MemoryError("no room for the features")

    monkeypatch.setattr(Predictor, "_features", broken)
    with pytest.raises(MemoryError, match="no room for the features"):
        _variant(predictor, batch_size=2).predict_many(files, show_progress=False, workers=1)
    assert paths_used["pipelined"] == 1
    assert multiprocessing.active_children() == []  # the feature process is gone


def test_a_killed_feature_process_is_one_line(predictor, tmp_path, monkeypatch):
    import contextlib
    import multiprocessing

    from asc.errors import AscError
    from asc.predict import Predictor

    files = _mixed_files(tmp_path)
    original = Predictor._pipeline

    def killing(self, paths, skip_bad):
        @contextlib.contextmanager
        def wrapped():
            with original(self, paths, skip_bad) as messages:
                def seen():
                    for message in messages:
                        for child in multiprocessing.active_children():
                            os.kill(child.pid, signal.SIGKILL)  # as the kernel's OOM killer would
                            child.join()
                        yield message
                yield seen()

        return wrapped()

    monkeypatch.setattr(Predictor, "_pipeline", killing)
    p = _variant(predictor, batch_size=1)  # many messages: the worker is still running at the first
    with pytest.raises(AscError, match=r"^the feature process ended unexpectedly .*--workers 0"):
        p.predict_many(files, show_progress=False, workers=1)
    assert multiprocessing.active_children() == []


def test_an_unpicklable_load_error_reaches_the_model_stage(predictor, tmp_path, paths_used, monkeypatch):
    from asc.predict import Predictor

    files = _mixed_files(tmp_path)
    original = Predictor.load

    class Odd(Exception):
        def __reduce__(self):
            raise TypeError("cannot pickle Odd")

    def load(self, path, on_constant=None):
        if str(path).endswith("mid.wav"):
            raise Odd("mid.wav: an odd failure")
        return original(self, path, on_constant)

    monkeypatch.setattr(Predictor, "load", load)
    with pytest.raises(RuntimeError, match="Odd: mid.wav: an odd failure"):
        _variant(predictor, batch_size=2).predict_many(files, show_progress=False, workers=1)
    assert paths_used["pipelined"] == 1


def test_shared_memory_that_cannot_be_mapped_is_one_line_naming_the_way_out(predictor, tmp_path,
                                                                            monkeypatch):
    """The feature process's batches live in shared memory mapped up front (batch_size windows x 4);
    when the system refuses it, the error says how much and what to lower, before any file is read."""
    import errno
    import mmap

    from asc.errors import AscError

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    monkeypatch.setattr(mmap, "mmap", refuse)
    files = _mixed_files(tmp_path)
    expected = (r"^cannot map \d+ MB of shared memory for the feature process \(Cannot allocate memory\); "
                r"lower --batch-size, or pass --workers 0$")
    with pytest.raises(AscError, match=expected):
        _variant(predictor, batch_size=2).predict_many(files, show_progress=False, workers=1)
    assert len(_variant(predictor, batch_size=2).predict_many(files, show_progress=False, workers=0)[0]) > 0


def test_the_shared_memory_is_unmapped_when_predict_many_returns(predictor, tmp_path, monkeypatch):
    """The slots are unmapped as soon as predict_many returns, not whenever the cyclic garbage
    collector runs: a program that predicts folder after folder holds no batches of features between
    calls. (Shared anonymous mappings show as /dev/zero in /proc/self/maps.)"""
    import gc

    def mapped() -> int:
        with open("/proc/self/maps") as fh:
            return sum("/dev/zero" in line for line in fh)

    from asc.predict import _Slots

    made = []
    original = _Slots.__init__

    def counted(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(mapped())  # mapped while the feature process runs

    monkeypatch.setattr(_Slots, "__init__", counted)
    files = _mixed_files(tmp_path)
    before = mapped()
    gc.disable()
    try:
        for _ in range(2):
            _variant(predictor, batch_size=2).predict_many(files, show_progress=False, workers=1)
            assert mapped() == before
    finally:
        gc.enable()
    assert made == [before + 1] * 2
