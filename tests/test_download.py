"""Download against a local HTTP server: md5 table, resume with Range, corruption, zip slip, idempotency,
and servers that never end, trickle, or accept and stay silent (each a bounded one-line error)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from asc.data.download import (
    ARCHIVE_ROOT,
    COMPLETE_MARKER,
    DATASETS,
    DEFAULT_BASE_URL,
    DEVELOPMENT_PACKAGES,
    EVAL_ARCHIVE_ROOT,
    EVALUATION_PACKAGES,
    Package,
    download_tau2020,
    extract_archive,
    fetch_package,
)
from asc.errors import DataError


class FakeZenodo:
    """Serves `files` with Range support; can cut a transfer short or corrupt the first response."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}     # name -> bytes sent before dropping the connection (once)
        self.corrupt_once: set[str] = set()
        self.hostile: dict[str, list[Callable]] = {}  # name -> handler(request, body, stop) per next GET
        self.stop = threading.Event()           # set on exit: hostile handlers end their loops
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if name in server.corrupt_once:
                    server.corrupt_once.discard(name)
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                body = data[start:]
                hostile = server.hostile.get(name)
                if hostile:
                    try:
                        hostile.pop(0)(self, body, server.stop)
                    except OSError:                 # the client hung up, as it should
                        pass
                    self.close_connection = True
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(name, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _pkg(name: str, data: bytes) -> Package:
    return Package(name, hashlib.md5(data).hexdigest(), len(data))


@pytest.fixture
def fake_set():
    meta = "filename\tscene_label\tidentifier\tsource_label\naudio/bus-paris-5-100-a.wav\tbus\tparis-5\ta\n"
    files = {
        f"{ARCHIVE_ROOT}.meta.zip": _zip({
            f"{ARCHIVE_ROOT}/meta.csv": meta.encode(),
            f"{ARCHIVE_ROOT}/evaluation_setup/fold1_train.csv": b"filename\tscene_label\n"
                                                                b"audio/bus-paris-5-100-a.wav\tbus\n",
        }),
        f"{ARCHIVE_ROOT}.audio.1.zip": _zip({
            f"{ARCHIVE_ROOT}/audio/bus-paris-5-100-a.wav": bytes(range(256)) * 400,
        }),
    }
    return files, [_pkg(name, data) for name, data in files.items()]


def test_published_md5_table():
    assert len(DEVELOPMENT_PACKAGES) == 18
    table = {p.filename.removeprefix(ARCHIVE_ROOT + "."): p.md5 for p in DEVELOPMENT_PACKAGES}
    assert table["doc.zip"] == "175f40dc3fec144347abad4d2962b7ae"
    assert table["meta.zip"] == "6eae9db553ce48e4ea246e34e50a3cf5"
    assert table["audio.1.zip"] == "b1e85b8a908d3d6a6ab73268f385d5c8"
    assert table["audio.16.zip"] == "2e0a89723e58a3836be019e6996ae460"
    assert [f"audio.{i}.zip" for i in range(1, 17)] == [k for k in table if k.startswith("audio.")]
    assert all(len(m) == 32 and int(m, 16) >= 0 for m in table.values())


def test_download_extracts_layout_and_is_idempotent(tmp_path, fake_set):
    files, packages = fake_set
    with FakeZenodo(files) as server:
        out = download_tau2020(tmp_path / "tau", server.url, packages, retry_wait=0, log=lambda *_: None)
        assert (out / "meta.csv").is_file() and (out / "evaluation_setup/fold1_train.csv").is_file()
        assert (out / "audio/bus-paris-5-100-a.wav").read_bytes() == bytes(range(256)) * 400
        assert not list((out / ".download").glob("*.zip"))  # archives removed after extraction
        n = len(server.requests)
        lines = []
        download_tau2020(tmp_path / "tau", server.url, packages, retry_wait=0, log=lines.append)
        assert len(server.requests) == n and "already downloaded" in lines[0]
    from asc.data.tau2020 import load_tau2020

    assert [c.id for c in load_tau2020(out).split("train")] == ["bus-paris-5-100-a"]


def test_interrupted_transfer_resumes_with_range(tmp_path, fake_set):
    files, packages = fake_set
    name = f"{ARCHIVE_ROOT}.audio.1.zip"
    with FakeZenodo(files) as server:
        server.cut_after[name] = 40000
        download_tau2020(tmp_path / "tau", server.url, packages, retry_wait=0, log=lambda *_: None)
        ranges = [r for n, r in server.requests if n == name]
    assert ranges == [None, "bytes=40000-"]
    assert (tmp_path / "tau/audio/bus-paris-5-100-a.wav").stat().st_size == 256 * 400


@pytest.mark.parametrize("dataset", ["dev", "eval"])
def test_part_file_from_an_earlier_run_is_continued(tmp_path, fake_set, fake_eval_set, dataset):
    files, packages = fake_set if dataset == "dev" else fake_eval_set
    root = ARCHIVE_ROOT if dataset == "dev" else EVAL_ARCHIVE_ROOT
    name = f"{root}.audio.1.zip"
    work = tmp_path / "tau/.download"
    work.mkdir(parents=True)
    (work / f"{name}.part").write_bytes(files[name][:12345])
    with FakeZenodo(files) as server:
        download_tau2020(tmp_path / "tau", server.url, packages, dataset=dataset, retry_wait=0,
                         log=lambda *_: None)
        assert [r for n, r in server.requests if n == name] == ["bytes=12345-"]
    if dataset == "eval":
        assert (tmp_path / "tau/audio/1.wav").read_bytes() == EVAL_AUDIO["audio/1.wav"]


def test_corrupted_download_is_detected_and_fetched_again(tmp_path, fake_set):
    files, packages = fake_set
    name = f"{ARCHIVE_ROOT}.meta.zip"
    with FakeZenodo(files) as server:
        server.corrupt_once.add(name)
        download_tau2020(tmp_path / "tau", server.url, packages, retry_wait=0, log=lambda *_: None)
        assert [r for n, r in server.requests if n == name] == [None, None]
    assert (tmp_path / "tau/meta.csv").is_file()


def test_persistently_wrong_md5_is_an_error(tmp_path, fake_set):
    files, packages = fake_set
    wrong = [Package(p.filename, "0" * 32, p.size) for p in packages]
    with FakeZenodo(files) as server, pytest.raises(DataError, match=r"meta.zip: md5 .* does not match"):
        download_tau2020(tmp_path / "tau", server.url, wrong, retry_wait=0, log=lambda *_: None)
    assert not (tmp_path / "tau/meta.csv").exists()


def test_missing_file_on_server_is_a_clear_error(tmp_path):
    with FakeZenodo({}) as server, pytest.raises(DataError, match="HTTP 404"):
        fetch_package(Package("nope.zip", "0" * 32), server.url + "nope.zip", tmp_path / "nope.zip",
                      retry_wait=0)


def test_server_gone_gives_resume_hint(tmp_path):
    with pytest.raises(DataError, match="rerun the same command to resume"):
        fetch_package(Package("x.zip", "0" * 32), "http://127.0.0.1:9/x.zip", tmp_path / "x.zip", retries=1,
                      retry_wait=0, connect_timeout=2)


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", f"{ARCHIVE_ROOT}/../../evil.txt",
                                    "C:/evil.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, member):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip({f"{ARCHIVE_ROOT}/meta.csv": b"x", member: b"owned"}))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match="refusing member"):
        extract_archive(archive, out)
    assert not any(out.rglob("*")) and not (tmp_path / "evil.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo(f"{ARCHIVE_ROOT}/audio/link.wav")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="links are not extracted"):
        extract_archive(archive, tmp_path / "out")


def test_zip_with_a_file_and_a_folder_of_one_name_is_refused_through_the_cli(tmp_path, monkeypatch, capsys):
    """A damaged archive: `audio` both a file and the folder of audio/x.wav. One line, nothing lost."""
    from asc.cli import main

    files = {f"{ARCHIVE_ROOT}.meta.zip": _zip({f"{ARCHIVE_ROOT}/audio": b"a file",
                                               f"{ARCHIVE_ROOT}/audio/x.wav": b"RIFF"})}
    packages = [_pkg(name, data) for name, data in files.items()]
    monkeypatch.setitem(DATASETS, "dev", dataclasses.replace(DATASETS["dev"], packages=packages))
    out = tmp_path / "tau"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with FakeZenodo(files) as server:
        code = main(["data", "download", "--to", str(out), "--base-url", server.url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "both a file and a folder named audio" in err[0] and "meta.zip" in err[0]
    assert (out / "notes.txt").read_text() == "mine" and not (out / "audio").exists()


def test_corrupt_archive_on_disk(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a readable zip archive"):
        extract_archive(tmp_path / "broken.zip", tmp_path)


# ---------------------------------------------------------------- the official evaluation set

EVAL_AUDIO = {f"audio/{i}.wav": bytes([i]) * 30000 for i in range(2)}
EVAL_FOLD = "filename\naudio/0.wav\naudio/1.wav\n"


@pytest.fixture
def fake_eval_set():
    """The evaluation record's layout: anonymous audio/N.wav and an unlabelled fold1_test.csv."""
    files = {
        f"{EVAL_ARCHIVE_ROOT}.doc.zip": _zip({f"{EVAL_ARCHIVE_ROOT}/README.md": b"evaluation set"}),
        f"{EVAL_ARCHIVE_ROOT}.meta.zip": _zip({
            f"{EVAL_ARCHIVE_ROOT}/evaluation_setup/fold1_test.csv": EVAL_FOLD.encode(),
        }),
        f"{EVAL_ARCHIVE_ROOT}.audio.1.zip": _zip({f"{EVAL_ARCHIVE_ROOT}/{name}": data
                                                 for name, data in EVAL_AUDIO.items()}),
    }
    return files, tuple(_pkg(name, data) for name, data in files.items())


def test_published_eval_md5_table():
    spec = DATASETS["eval"]
    assert (spec.record, spec.root, spec.packages) == (3685828, EVAL_ARCHIVE_ROOT, EVALUATION_PACKAGES)
    assert spec.base_url == "https://zenodo.org/record/3685828/files/"
    table = {p.filename.removeprefix(EVAL_ARCHIVE_ROOT + "."): p for p in EVALUATION_PACKAGES}
    assert list(table) == ["doc.zip", "meta.zip"] + [f"audio.{i}.zip" for i in range(1, 9)]
    assert table["doc.zip"].md5 == "2f1ac2991111c6ee1d51bec6e27bd825"
    assert table["meta.zip"].md5 == "b8d9bb50faa282be170b81dc57e2b8b3"
    assert table["audio.1.zip"].md5 == "632841f6b1ef9ed962ea61f879967411"
    assert table["audio.8.zip"].md5 == "4db5255382a5e5cab2d463c0d836b888"
    assert all(len(p.md5) == 32 and int(p.md5, 16) >= 0 and p.size for p in EVALUATION_PACKAGES)
    assert len({p.md5 for p in EVALUATION_PACKAGES + DEVELOPMENT_PACKAGES}) == 28  # no copy-paste slip
    # the development set is unchanged
    dev = DATASETS["dev"]
    assert (dev.record, dev.root, dev.packages, dev.base_url) == (3819968, ARCHIVE_ROOT, DEVELOPMENT_PACKAGES,
                                                                  DEFAULT_BASE_URL)


def _cli(argv: list[str]) -> int:
    from asc.cli import main

    return main(argv)


def test_eval_set_via_cli_verifies_extracts_and_resumes(tmp_path, fake_eval_set, monkeypatch, capsys):
    files, packages = fake_eval_set
    monkeypatch.setitem(DATASETS, "eval", dataclasses.replace(DATASETS["eval"], packages=packages))
    monkeypatch.setattr("asc.data.download.time.sleep", lambda _: None)
    audio, meta = f"{EVAL_ARCHIVE_ROOT}.audio.1.zip", f"{EVAL_ARCHIVE_ROOT}.meta.zip"
    out = tmp_path / "tau-eval"
    with FakeZenodo(files) as server:
        server.cut_after[audio] = 20000        # dropped connection: resumed with Range
        server.corrupt_once.add(meta)           # wrong md5: detected and fetched again
        argv = ["data", "download", "--set", "eval", "--to", str(out), "--base-url", server.url]
        assert _cli(argv) == 0
        assert [r for n, r in server.requests if n == audio] == [None, "bytes=20000-"]
        assert [r for n, r in server.requests if n == meta] == [None, None]
        assert f"{out}: 2 clips (eval); test 2" in capsys.readouterr().out
        assert (out / "evaluation_setup/fold1_test.csv").read_text() == EVAL_FOLD
        for name, data in EVAL_AUDIO.items():
            assert (out / name).read_bytes() == data
        assert not (out / EVAL_ARCHIVE_ROOT).exists() and not (out / "meta.csv").exists()
        assert not list((out / ".download").glob("*.zip"))
        assert json.loads((out / COMPLETE_MARKER).read_text())["record"] == 3685828
        n = len(server.requests)
        assert _cli(argv) == 0                  # a finished download is not repeated
        assert len(server.requests) == n and "already downloaded" in capsys.readouterr().out
    from asc.data.tau2020 import load_tau2020

    test = load_tau2020(out).split("test")
    assert [c.filename for c in test] == ["audio/0.wav", "audio/1.wav"] and test[0].scene is None


def test_eval_wrong_md5_is_an_error(tmp_path, fake_eval_set):
    files, packages = fake_eval_set
    wrong = [Package(p.filename, "0" * 32, p.size) for p in packages]
    with FakeZenodo(files) as server, pytest.raises(DataError, match=r"doc.zip: md5 .* does not match"):
        download_tau2020(tmp_path / "eval", server.url, wrong, dataset="eval", retry_wait=0,
                         log=lambda *_: None)


def test_sets_are_not_mixed_in_one_folder(tmp_path, fake_set, fake_eval_set):
    (dev_files, dev_packages), (eval_files, eval_packages) = fake_set, fake_eval_set
    quiet = {"retry_wait": 0, "log": lambda *_: None}
    with FakeZenodo({**dev_files, **eval_files}) as server:
        download_tau2020(tmp_path / "dev", server.url, dev_packages, **quiet)
        with pytest.raises(DataError, match="already holds the dev set .* into another folder"):
            download_tau2020(tmp_path / "dev", server.url, eval_packages, dataset="eval", **quiet)
        partial = tmp_path / "partial/.download"
        partial.mkdir(parents=True)
        (partial / f"{EVAL_ARCHIVE_ROOT}.meta.zip.done").write_text("{}")
        with pytest.raises(DataError, match="holds part of the eval set"):
            download_tau2020(tmp_path / "partial", server.url, dev_packages, **quiet)
    assert not (tmp_path / "dev/audio/0.wav").exists()


def test_download_parser_sets(capsys):
    from asc.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["data", "download", "--to", "d"]).dataset == "dev"
    for name in DATASETS:                       # every set in the table is selectable
        reader, _, which = name.rpartition("-")
        args = parser.parse_args(["data", "download", *(["--dataset", reader] if reader else []),
                                  "--set", which, "--to", "d"])
        assert (args.reader, args.dataset) == (reader or "tau2020", which)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["data", "download", "--set", "nonsense", "--to", "d"])
    assert exc.value.code == 2 and "invalid choice: 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "download", "--help"])
    assert "asc data download --set eval --to" in capsys.readouterr().out


def test_unknown_dataset_name_in_the_api(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nonsense'; choose one of dev, eval"):
        download_tau2020(tmp_path, dataset="nonsense")


# ----------------------------------------------------------- servers that never end, trickle or stay silent

DATA = bytes(range(256)) * 40   # 10240 bytes
FAST = {"retries": 1, "retry_wait": 0, "connect_timeout": 1.0, "stall_bytes": 100, "stall_window": 1.0}


def _fetch_data(tmp_path, url: str, data: bytes = DATA, **kw):
    return fetch_package(_pkg("a.zip", data), url, tmp_path / "a.zip", **{**FAST, **kw})


def _one_line_error(call, url: str, seconds: float) -> str:
    """Run `call`, expect a DataError naming `url`, on one line, within `seconds`."""
    t = time.monotonic()
    with pytest.raises(DataError) as exc:
        call()
    assert time.monotonic() - t < seconds
    msg = str(exc.value)
    assert msg.startswith(url) and "\n" not in msg, msg
    return msg


def _honest_headers(req, body) -> None:
    """200, or 206 with Content-Range when the request asked for a range; Content-Length of `body`."""
    rng = req.headers.get("Range")
    start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
    req.send_response(206 if rng else 200)
    if rng:
        req.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{start + len(body)}")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()


def _endless(req, body, stop):
    """No Content-Length and a body that never ends."""
    req.send_response(200)
    req.end_headers()
    req.wfile.write(body)
    while not stop.is_set():
        req.wfile.write(b"\0" * 65536)


def _trickle(req, body, stop):
    """Honest headers, then one byte every 0.2 s."""
    _honest_headers(req, body)
    for i in range(len(body)):
        if stop.wait(0.2):
            return
        req.wfile.write(body[i:i + 1])


def _slow_headers(req, body, stop):
    for i, _ in enumerate(status := b"HTTP/1.1 200 OK\r\nContent-Length: 10240\r\n\r\n"):
        if stop.wait(0.2):
            return
        req.wfile.write(status[i:i + 1])


def _half_then_silent(req, body, stop):
    _honest_headers(req, body)
    req.wfile.write(body[:4000])
    stop.wait(30)


def test_endless_body_stops_at_the_published_size(tmp_path):
    with FakeZenodo({"a.zip": DATA}) as server:
        server.hostile["a.zip"] = [_endless]
        url = server.url + "a.zip"
        msg = _one_line_error(lambda: _fetch_data(tmp_path, url), url, 5)
        assert "runs past the published size of 10240 bytes" in msg
        assert (tmp_path / "a.zip.part").read_bytes() == DATA      # nothing kept beyond the size
        assert _fetch_data(tmp_path, url).read_bytes() == DATA       # a rerun checks it, asks nothing
        assert len(server.requests) == 1


def test_announced_size_other_than_the_published_one_is_refused(tmp_path):
    with FakeZenodo({"a.zip": DATA + b"more"}) as server:
        url = server.url + "a.zip"
        msg = _one_line_error(lambda: _fetch_data(tmp_path, url), url, 5)
    assert "announces 10244 bytes where the published size is 10240" in msg
    assert not (tmp_path / "a.zip.part").exists()


def test_trickling_body_is_a_stall_and_each_retry_resumes(tmp_path):
    with FakeZenodo({"a.zip": DATA}) as server:
        server.hostile["a.zip"] = [_trickle, _trickle]
        url = server.url + "a.zip"
        msg = _one_line_error(lambda: _fetch_data(tmp_path, url), url, 6)
        ranges = [r for _, r in server.requests]
    assert "stalled: fewer than 100 bytes in 1 s" in msg and "after 2 attempts" in msg
    kept = (tmp_path / "a.zip.part").read_bytes()
    assert 0 < len(kept) < 100 and DATA.startswith(kept) and f"resume from {len(kept)} bytes" in msg
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_trickled_headers_are_bounded_by_the_connect_timeout(tmp_path):
    with FakeZenodo({"a.zip": DATA}) as server:
        server.hostile["a.zip"] = [_slow_headers, _slow_headers]
        url = server.url + "a.zip"
        msg = _one_line_error(lambda: _fetch_data(tmp_path, url), url, 6)
    assert "no answer within 1 s" in msg


def test_server_that_accepts_and_stays_silent(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as srv:    # listens, never accepts, never answers
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/a.zip"
        msg = _one_line_error(lambda: _fetch_data(tmp_path, url), url, 6)
    assert "no answer within 1 s" in msg and "rerun the same command" in msg


def test_connection_that_never_completes_times_out(tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        held = []
        try:
            for _ in range(8):       # fill the accept queue until a new connection hangs
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=0.3))
                except OSError:
                    break
            else:
                pytest.skip("this system does not leave connections to a full accept queue hanging")
            url = f"http://127.0.0.1:{port}/a.zip"
            msg = _one_line_error(lambda: _fetch_data(tmp_path, url), url, 6)
        finally:
            for conn in held:
                conn.close()
    assert "no connection within 1 s" in msg


def test_transfer_that_stalls_midway_resumes(tmp_path, fake_set):
    files, packages = fake_set
    name = f"{ARCHIVE_ROOT}.audio.1.zip"
    with FakeZenodo(files) as server:
        server.hostile[name] = [_half_then_silent]
        t = time.monotonic()
        download_tau2020(tmp_path / "tau", server.url, packages, log=lambda *_: None,
                         **{**FAST, "retries": 2})
        assert time.monotonic() - t < 5
        assert [r for n, r in server.requests if n == name] == [None, "bytes=4000-"]
    assert (tmp_path / "tau/audio/bus-paris-5-100-a.wav").read_bytes() == bytes(range(256)) * 400


def test_part_file_longer_than_the_archive_is_fetched_again(tmp_path):
    (tmp_path / "a.zip.part").write_bytes(DATA + b"junk")
    with FakeZenodo({"a.zip": DATA}) as server:
        assert _fetch_data(tmp_path, server.url + "a.zip").read_bytes() == DATA
        assert [r for _, r in server.requests] == [None]


def test_tau2022_sets_download_through_the_cli_and_read_as_tau2022(tmp_path, monkeypatch, capsys):
    """The TAU 2022 Mobile record's archive table (from dcase_util, the development md5 sums also in
    soundata) and its layout, fetched from a local server through `asc data download --dataset tau2022`."""
    from asc.data.download import TAU2022_DEV_PACKAGES, TAU2022_DEV_ROOT, TAU2022_EVAL_PACKAGES

    dev = DATASETS["tau2022-dev"]
    assert (dev.record, dev.root) == (6337421, TAU2022_DEV_ROOT)
    assert DATASETS["tau2022-eval"].record == 6591203
    table = {p.filename.removeprefix(TAU2022_DEV_ROOT + "."): p for p in TAU2022_DEV_PACKAGES}
    assert list(table) == ["doc.zip", "meta.zip"] + [f"audio.{i}.zip" for i in range(1, 17)]
    assert table["audio.1.zip"].md5 == "8be14bdbd844481dce059ab31fbd2239"
    assert table["meta.zip"].md5 == "419b6ff6570f1030730352dc80cd8d15"
    assert len(TAU2022_EVAL_PACKAGES) == 10
    assert all(len(p.md5) == 32 and p.size for p in TAU2022_EVAL_PACKAGES)
    assert len({p.md5 for p in TAU2022_DEV_PACKAGES + TAU2022_EVAL_PACKAGES}) == 28

    name = "audio/bus-paris-5-100-3-a.wav"
    files = {
        f"{TAU2022_DEV_ROOT}.meta.zip": _zip({
            f"{TAU2022_DEV_ROOT}/meta.csv": f"filename\tscene_label\tidentifier\tsource_label\n"
                                             f"{name}\tbus\tparis-5\ta\n".encode(),
            f"{TAU2022_DEV_ROOT}/evaluation_setup/fold1_train.csv":
                f"filename\tscene_label\n{name}\tbus\n".encode(),
        }),
        f"{TAU2022_DEV_ROOT}.audio.1.zip": _zip({f"{TAU2022_DEV_ROOT}/{name}": bytes(range(256)) * 40}),
    }
    packages = tuple(_pkg(n, d) for n, d in files.items())
    monkeypatch.setitem(DATASETS, "tau2022-dev", dataclasses.replace(dev, packages=packages))
    out = tmp_path / "tau2022"
    with FakeZenodo(files) as server:
        argv = ["data", "download", "--dataset", "tau2022", "--to", str(out), "--base-url", server.url]
        assert _cli(argv) == 0
    assert f"{out}: 1 clips" in capsys.readouterr().out
    from asc.data.readers import detect_reader, load_dataset

    data = load_dataset(out)
    assert detect_reader(out) == "tau2022" and data.description.duration == 1.0
    assert [(c.scene, c.device, c.segment) for c in data.split("train")] == [("bus", "a", "100-3")]
