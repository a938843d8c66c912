"""Download TAU Urban Acoustic Scenes 2020 Mobile (development or evaluation set) from Zenodo.

Each set is data in `DATASETS` (record, archive root, published archives), not a code path. Each
archive is fetched into `DIR/.download/NAME.part` (resumed with an HTTP Range request after an
interruption), checked against its published md5, then extracted — refusing absolute paths, '..'
and links — so that DIR holds `audio/` and `evaluation_setup/` (plus `meta.csv` for the development
set). A per-archive marker makes reruns skip finished archives; a final marker makes a rerun of a
finished download a no-op. One DIR holds one set: the two share file names (fold1_test.csv).

Every transfer has an end: a body is never read past the published size (nor accepted when the server
announces another size), the server must answer within `connect_timeout` seconds and then deliver at
least `stall_bytes` in every `stall_window` seconds, all measured by wall clock, so a server that streams
forever, trickles a byte at a time or accepts and stays silent costs bounded time and disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asc.errors import DataError
from asc.fileio import atomic_write_json

ZENODO_RECORD = 3819968
DEFAULT_BASE_URL = f"https://zenodo.org/record/{ZENODO_RECORD}/files/"
ARCHIVE_ROOT = "TAU-urban-acoustic-scenes-2020-mobile-development"
DOWNLOAD_DIR = ".download"
COMPLETE_MARKER = ".download-complete.json"
CHUNK = 1 << 20
CONNECT_TIMEOUT = 30.0      # seconds for the connection and the response headers
STALL_BYTES = 64 << 10      # a body must deliver at least this many bytes ...
STALL_WINDOW = 60.0         # ... in every window of this many seconds (about 1 KiB/s)


@dataclass(frozen=True)
class Package:
    filename: str
    md5: str
    size: int | None = None     # bytes, for the progress bar and the free-space check


# The published archives of record 3819968 (version 2) with their md5 sums and sizes.
DEVELOPMENT_PACKAGES: tuple[Package, ...] = (
    Package(f"{ARCHIVE_ROOT}.doc.zip", "175f40dc3fec144347abad4d2962b7ae", 18066),
    Package(f"{ARCHIVE_ROOT}.meta.zip", "6eae9db553ce48e4ea246e34e50a3cf5", 214159),
    Package(f"{ARCHIVE_ROOT}.audio.1.zip", "b1e85b8a908d3d6a6ab73268f385d5c8", 1726039031),
    Package(f"{ARCHIVE_ROOT}.audio.2.zip", "4310a13cc2943d6ce3f70eba7ba4c784", 1782268370),
    Package(f"{ARCHIVE_ROOT}.audio.3.zip", "ed38956c4246abb56190c1e9b602b7b8", 1870468865),
    Package(f"{ARCHIVE_ROOT}.audio.4.zip", "97ab8560056b6816808dedc044dcc023", 1879413176),
    Package(f"{ARCHIVE_ROOT}.audio.5.zip", "b50f5e0bfed33cd8e52cb3e7f815c6cb", 1823936584),
    Package(f"{ARCHIVE_ROOT}.audio.6.zip", "fbf856a3a86fff7520549c899dc94372", 1827246144),
    Package(f"{ARCHIVE_ROOT}.audio.7.zip", "0dbffe7b6e45564da649378723284062", 1728630243),
    Package(f"{ARCHIVE_ROOT}.audio.8.zip", "bb6f77832bf0bd9f786f965beb251b2e", 1748646043),
    Package(f"{ARCHIVE_ROOT}.audio.9.zip", "a65596a5372eab10c78e08a0de797c9e", 1780487215),
    Package(f"{ARCHIVE_ROOT}.audio.10.zip", "2ad595819ffa1d56d2de4c7ed43205a6", 1726068853),
    Package(f"{ARCHIVE_ROOT}.audio.11.zip", "0ad29f7040a4e6a22cfd639b3a6738e5", 1744480272),
    Package(f"{ARCHIVE_ROOT}.audio.12.zip", "e5f4400c6b9697295fab4cf507155a2f", 1738707195),
    Package(f"{ARCHIVE_ROOT}.audio.13.zip", "8855ab9f9896422746ab4c5d89d8da2f", 1835797785),
    Package(f"{ARCHIVE_ROOT}.audio.14.zip", "092ad744452cd3e7de78f988a3d13020", 1846390881),
    Package(f"{ARCHIVE_ROOT}.audio.15.zip", "4b5eb85f6592aebf846088d9df76b420", 1869032508),
    Package(f"{ARCHIVE_ROOT}.audio.16.zip", "2e0a89723e58a3836be019e6996ae460", 436971777),
)

EVAL_RECORD = 3685828
EVAL_ARCHIVE_ROOT = "TAU-urban-acoustic-scenes-2020-mobile-evaluation"

# The published archives of record 3685828 (the official evaluation set: anonymous audio/N.wav, no
# labels, evaluation_setup/fold1_test.csv). Names, md5 sums and sizes as listed in DCASE-REPO/dcase_util,
# dcase_util/datasets/tau.py, TAUUrbanAcousticScenes_2020_Mobile_EvaluationSet.package_list (whose
# development entries equal DEVELOPMENT_PACKAGES above); the md5 sums also agree with soundata/soundata,
# soundata/datasets/tau2020uas_mobile.py, REMOTES["evaluation.*"].
EVALUATION_PACKAGES: tuple[Package, ...] = (
    Package(f"{EVAL_ARCHIVE_ROOT}.doc.zip", "2f1ac2991111c6ee1d51bec6e27bd825", 8030),
    Package(f"{EVAL_ARCHIVE_ROOT}.meta.zip", "b8d9bb50faa282be170b81dc57e2b8b3", 28811),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.1.zip", "632841f6b1ef9ed962ea61f879967411", 1668607729),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.2.zip", "711fb0469f9b66669a300ebd1de24e9b", 1674217327),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.3.zip", "575e517b826a5faf020be22ce766adf8", 1672649006),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.4.zip", "5919fcbe217964756892a9661323c020", 1665432028),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.5.zip", "c733767217f16c746f50796c65ca1dd6", 1680713648),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.6.zip", "f39feb24910ffc97413e9c94b418f7ab", 1670741441),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.7.zip", "90bad61f14163146702d430cf8241932", 1673394812),
    Package(f"{EVAL_ARCHIVE_ROOT}.audio.8.zip", "4db5255382a5e5cab2d463c0d836b888", 1433443122),
)

TAU2022_DEV_RECORD = 6337421
TAU2022_DEV_ROOT = "TAU-urban-acoustic-scenes-2022-mobile-development"
TAU2022_EVAL_RECORD = 6591203
TAU2022_EVAL_ROOT = "TAU-urban-acoustic-scenes-2022-mobile-evaluation"

# TAU Urban Acoustic Scenes 2022 Mobile (1-s segments of the 2020 recordings). Names, md5 sums and sizes
# as listed in DCASE-REPO/dcase_util, dcase_util/datasets/tut.py,
# TAUUrbanAcousticScenes_2022_Mobile_{Development,Evaluation}Set.package_list; the development md5 sums
# also agree with soundata/soundata, soundata/datasets/tau2022uas_mobile.py.
TAU2022_DEV_PACKAGES: tuple[Package, ...] = (
    Package(f"{TAU2022_DEV_ROOT}.doc.zip", "9c4f610bdb5d3e3e72a17d393a26452a", 16819),
    Package(f"{TAU2022_DEV_ROOT}.meta.zip", "419b6ff6570f1030730352dc80cd8d15", 1538781),
    Package(f"{TAU2022_DEV_ROOT}.audio.1.zip", "8be14bdbd844481dce059ab31fbd2239", 1736050960),
    Package(f"{TAU2022_DEV_ROOT}.audio.2.zip", "e821abda49b069248bb75eab39df7575", 1791821989),
    Package(f"{TAU2022_DEV_ROOT}.audio.3.zip", "9c7897f78bb42ca0008936daddf3f8f3", 1878561499),
    Package(f"{TAU2022_DEV_ROOT}.audio.4.zip", "53ec3e37c0fc0be75f53c5abbc5300b8", 1887825128),
    Package(f"{TAU2022_DEV_ROOT}.audio.5.zip", "528422c33c5d10263203d2c61cb1f3be", 1832871840),
    Package(f"{TAU2022_DEV_ROOT}.audio.6.zip", "4759a9465c903e13e57d5e82e791fc28", 1836165296),
    Package(f"{TAU2022_DEV_ROOT}.audio.7.zip", "6d545fc83a55a17856a9ccc1ac9aff6b", 1737838582),
    Package(f"{TAU2022_DEV_ROOT}.audio.8.zip", "3a2916a9b5d3f43cc7a22a62b180b0d9", 1758317867),
    Package(f"{TAU2022_DEV_ROOT}.audio.9.zip", "071f664c86639ad730f7be4e3c39d886", 1790044829),
    Package(f"{TAU2022_DEV_ROOT}.audio.10.zip", "e0839d019e9b77ecbcbb0eff85965530", 1736836871),
    Package(f"{TAU2022_DEV_ROOT}.audio.11.zip", "fc60f1c83726be3963ae14fbcb95eeb4", 1754618148),
    Package(f"{TAU2022_DEV_ROOT}.audio.12.zip", "02246547f86c0a814dc63ec65d7033bb", 1748795940),
    Package(f"{TAU2022_DEV_ROOT}.audio.13.zip", "88ae9ef884665140d1572d8061725e00", 1844234922),
    Package(f"{TAU2022_DEV_ROOT}.audio.14.zip", "c3f400d74ae90e5190dc518cde43de47", 1854884822),
    Package(f"{TAU2022_DEV_ROOT}.audio.15.zip", "85594c6fe4f91c10aa2a410f748103b8", 1877789093),
    Package(f"{TAU2022_DEV_ROOT}.audio.16.zip", "6e2df8438c69f6789414aeba8cbad9d8", 435379083),
)

TAU2022_EVAL_PACKAGES: tuple[Package, ...] = (
    Package(f"{TAU2022_EVAL_ROOT}.doc.zip", "885bcd97d13c12571348250a9e132fae", 8056),
    Package(f"{TAU2022_EVAL_ROOT}.meta.zip", "53ff714b17293c5f973ce233db393416", 294726),
    Package(f"{TAU2022_EVAL_ROOT}.audio.1.zip", "740f80e5a62821f80d0d2c2660fa616c", 1684954408),
    Package(f"{TAU2022_EVAL_ROOT}.audio.2.zip", "4accb0bd9486c429540770ef4fdd5595", 1685855969),
    Package(f"{TAU2022_EVAL_ROOT}.audio.3.zip", "bf8c5c3c6d49c1517ee6e7402e1e7121", 1684186384),
    Package(f"{TAU2022_EVAL_ROOT}.audio.4.zip", "bb086c4225119d332e0ceea8234b4435", 1683652385),
    Package(f"{TAU2022_EVAL_ROOT}.audio.5.zip", "e4ab8505774526279d6231d6769c3c79", 1685227691),
    Package(f"{TAU2022_EVAL_ROOT}.audio.6.zip", "270f122ebe737fd2e463165a76f6abbd", 1688648060),
    Package(f"{TAU2022_EVAL_ROOT}.audio.7.zip", "86d975ee1b4d09b26e1b998f122189e1", 1685304723),
    Package(f"{TAU2022_EVAL_ROOT}.audio.8.zip", "93b3c7dc8be152f9bf1edbbe8cf8d1b1", 1451063404),
)


@dataclass(frozen=True)
class DatasetSpec:
    """One downloadable set: its Zenodo record, the top folder inside its zips, and its archives."""

    name: str                   # the `--set` value
    record: int
    root: str
    packages: tuple[Package, ...]

    @property
    def base_url(self) -> str:
        return f"https://zenodo.org/record/{self.record}/files/"


DATASETS: dict[str, DatasetSpec] = {
    "dev": DatasetSpec("dev", ZENODO_RECORD, ARCHIVE_ROOT, DEVELOPMENT_PACKAGES),     # development set
    "eval": DatasetSpec("eval", EVAL_RECORD, EVAL_ARCHIVE_ROOT, EVALUATION_PACKAGES),  # evaluation set
    "tau2022-dev": DatasetSpec("tau2022-dev", TAU2022_DEV_RECORD, TAU2022_DEV_ROOT, TAU2022_DEV_PACKAGES),
    "tau2022-eval": DatasetSpec("tau2022-eval", TAU2022_EVAL_RECORD, TAU2022_EVAL_ROOT,
                                TAU2022_EVAL_PACKAGES),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The DATASETS entry for `name`; a DataError (not KeyError) for API callers with a typo."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


class _Stalled(Exception):
    """A transfer stopped by the watchdog; the message says which deadline passed."""


_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError,
              _Stalled)


def _md5_of(path: Path):
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h


class _Watchdog:
    """Wall-clock deadlines for one request, enforced by shutting its socket down.

    A socket timeout bounds each read, not their sum: a server sending a byte every 20 s, or trickling
    its headers, never trips it. This thread gives the server `connect_timeout` seconds to answer
    (headers included), then `stall_window` seconds for every `stall_bytes` of body; when a deadline
    passes it shuts the socket, which wakes the blocked read, and `reason` says which one passed.
    """

    def __init__(self, connect_timeout: float, stall_bytes: int, stall_window: float) -> None:
        self.stall_bytes, self.stall_window = stall_bytes, stall_window
        self.backstop = max(connect_timeout, stall_window) + 1.0   # per-read socket timeout, never the limit
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._deadline = time.monotonic() + connect_timeout
        self._why = f"no answer within {connect_timeout:g} s"
        self._need = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="asc-download-watchdog", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def attach(self, sock: socket.socket) -> None:
        """The socket of the current connection (a redirect opens another).

        Once connected, reads wait up to the backstop, so the deadline that ends a silent server is always
        this thread's, named in `reason`, never a bare socket timeout racing it."""
        with contextlib.suppress(OSError):
            sock.settimeout(self.backstop)
        with self._lock:
            self._sock = sock
            fired = self.reason is not None
        if fired:
            self._shut(sock)

    def answered(self) -> None:
        """Headers are in: from now on the body must keep flowing."""
        with self._lock:
            self._deadline = time.monotonic() + self.stall_window
            self._need = self.stall_bytes
            self._why = f"stalled: fewer than {self.stall_bytes} bytes in {self.stall_window:g} s"
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(self.backstop)

    def received(self, n: int) -> None:
        with self._lock:
            self._need -= n
            if self._need <= 0:
                self._deadline = time.monotonic() + self.stall_window
                self._need = self.stall_bytes

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _shut(sock: socket.socket | None) -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)   # the plain call: leaves TLS state alone

    def _run(self) -> None:
        while True:
            with self._lock:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    self.reason = self._why
                    sock = self._sock
            if left <= 0:
                self._shut(sock)
                return
            if self._stop.wait(left):
                return


def _opener(watch: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener (redirects, proxies, TLS as usual) whose connections hand their sockets to `watch`."""

    def watched(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        class Connection(base):  # type: ignore[valid-type, misc]
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                create = self._create_connection

                def create_and_attach(*a, **kw):   # the raw socket, so a silent TLS handshake is bounded too
                    sock = create(*a, **kw)
                    watch.attach(sock)
                    return sock

                self._create_connection = create_and_attach

            def connect(self) -> None:
                super().connect()
                watch.attach(self.sock)

        return Connection

    http_conn, https_conn = watched(http.client.HTTPConnection), watched(http.client.HTTPSConnection)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_conn, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_conn, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _announced(resp: http.client.HTTPResponse) -> int | None:
    length = resp.headers.get("Content-Length")
    try:
        return int(length) if length is not None else None
    except ValueError:
        return None


def _fetch(url: str, part: Path, size: int | None, connect_timeout: float, stall_bytes: int,
           stall_window: float) -> str:
    """Append the rest of `url` to `part` (Range from its current size); returns the md5 of the whole.

    With a published `size`, nothing beyond it is requested, read or kept."""
    from asc.progress import progress

    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:   # longer than the archive can be: not a prefix of it
        part.unlink()
        have = 0
    h = _md5_of(part) if have else hashlib.md5()
    if size is not None and have == size:   # complete already: the md5 decides
        return h.hexdigest()
    req = urllib.request.Request(url, headers={"User-Agent": "asc-l2bn"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    watch = _Watchdog(connect_timeout, stall_bytes, stall_window)
    try:
        try:
            resp = _opener(watch).open(req, timeout=connect_timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
                return h.hexdigest()
            raise
        except Exception as exc:
            if watch.reason and watch.connected:   # else a failed connect, which says so itself
                raise _Stalled(watch.reason) from exc
            raise
        watch.answered()
        with resp:
            if have and resp.status != 206:  # the server ignored Range: start over
                have, h = 0, hashlib.md5()
                part.unlink(missing_ok=True)
            length = _announced(resp)
            if size is not None and length is not None and have + length != size:
                raise DataError(f"{url}: the server announces {have + length} bytes where the published size "
                                f"is {size}; nothing was kept, check --base-url")
            left = None if size is None else size - have
            total = size if size is not None else (have + length if length is not None else None)
            bar = progress(total=total, initial=have, desc=part.name.removesuffix(".part"), unit="B",
                           unit_scale=True, unit_divisor=1024)
            received = 0
            try:
                with open(part, "ab") as fh:
                    while left is None or received < left:
                        block = resp.read1(CHUNK if left is None else min(CHUNK, left - received))
                        if not block:
                            break
                        fh.write(block)
                        h.update(block)
                        received += len(block)
                        watch.received(len(block))
                        bar.update(len(block))
                    if left is not None and received == left and not watch.reason and resp.read1(1):
                        raise DataError(f"{url}: the body runs past the published size of {size} bytes; "
                                        "stopped there and kept nothing beyond it, check --base-url")
            except _TRANSIENT as exc:
                if watch.reason:
                    raise _Stalled(watch.reason) from exc
                raise
            finally:
                bar.close()
            if watch.reason and (left is None or received < left):
                raise _Stalled(watch.reason)
            if length is not None and received < length:
                raise http.client.IncompleteRead(b"", length - received)
    finally:
        watch.close()
    return h.hexdigest()


def _describe(exc: BaseException, connect_timeout: float) -> str:
    """One line for why an attempt failed."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and isinstance(reason, (socket.timeout, TimeoutError)):
        text = f"no connection within {connect_timeout:g} s"
    elif isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        text = str(reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def fetch_package(pkg: Package, url: str, dest: Path, *, retries: int = 5, retry_wait: float = 2.0,
                  connect_timeout: float = CONNECT_TIMEOUT, stall_bytes: int = STALL_BYTES,
                  stall_window: float = STALL_WINDOW) -> Path:
    """Download `url` to `dest` with resume and md5 check; a corrupt result is fetched again once.

    A failed attempt (dropped, refused, silent or stalled) is retried `retries` times after waits of
    `retry_wait`, 2x, 4x, ... seconds, each resuming where the last stopped; each attempt without
    progress ends within about 2 x `connect_timeout` + `stall_window` seconds, so giving up takes
    bounded time. Smaller thresholds make tests fast."""
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if _md5_of(dest).hexdigest() == pkg.md5:
            return dest
        dest.unlink()
    corrupt_refetched = False
    failures = 0
    while True:
        try:
            digest = _fetch(url, part, pkg.size, connect_timeout, stall_bytes, stall_window)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise DataError(f"{url}: HTTP {exc.code} {exc.reason}; check --base-url") from None
            error: Exception = exc
        except _TRANSIENT as exc:
            error = exc
        else:
            if digest == pkg.md5:
                os.replace(part, dest)
                return dest
            part.unlink(missing_ok=True)
            if corrupt_refetched:
                raise DataError(f"{dest.name}: md5 {digest} does not match the published {pkg.md5} after a "
                                f"second download; the server copy may have changed, try again later")
            corrupt_refetched = True
            continue
        failures += 1
        if failures > retries:
            why, tries = _describe(error, connect_timeout), f"{failures} attempt{'s' * (failures > 1)}"
            raise DataError(f"{url}: download interrupted ({why}) after {tries}; "
                            f"check the network or --base-url, then rerun the same command to resume from "
                            f"{part.stat().st_size if part.exists() else 0} bytes")
        time.sleep(retry_wait * 2 ** (failures - 1))


def _member_target(archive: Path, info: zipfile.ZipInfo, root: str = ARCHIVE_ROOT) -> PurePosixPath | None:
    """Where a member goes, relative to the dataset folder; None for the archive's top folder `root`."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        raise DataError(f"{archive.name}: refusing member {info.filename!r}: it points outside the dataset "
                        f"folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{archive.name}: refusing member {info.filename!r}: links are not extracted")
    parts = path.parts[1:] if path.parts and path.parts[0] == root else path.parts
    return PurePosixPath(*parts) if parts else None


def extract_archive(archive: Path, to: Path, root: str = ARCHIVE_ROOT) -> int:
    """Extract `archive` into `to` (top folder `root` stripped), each file atomically; returns the count."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc}); delete it and rerun") from None
    with zf:
        members = [(info, _member_target(archive, info, root)) for info in zf.infolist()]  # check all first
        files = {rel for info, rel in members if rel is not None and not info.is_dir()}
        folders = {parent for _, rel in members if rel is not None for parent in rel.parents}
        folders |= {rel for info, rel in members if rel is not None and info.is_dir()}
        clash = sorted(files & folders)
        if clash:
            raise DataError(f"{archive}: holds both a file and a folder named {clash[0]}; the archive is "
                            "damaged or not the dataset's: delete it and rerun")
        count = 0
        for info, rel in members:
            if rel is None:
                continue
            target = to / rel
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir():
                    raise IsADirectoryError(21, "a folder is in the way of a file", str(target))
                tmp = target.with_name(f".{target.name}.tmp")
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                os.replace(tmp, target)
            except OSError as exc:
                where = exc.filename or target
                raise DataError(f"{where}: cannot extract {info.filename!r} from {archive.name} "
                                f"({exc.strerror or exc}); free space or move what is in the way, then "
                                "rerun") from None
            count += 1
    return count


def _refuse_other_set(to: Path, spec: DatasetSpec) -> None:
    """Stop before mixing two sets in one folder: both have evaluation_setup/fold1_test.csv."""
    marker = to / COMPLETE_MARKER
    if marker.is_file():
        try:
            record = json.loads(marker.read_text(encoding="utf-8")).get("record")
        except (OSError, ValueError):
            record = None
        if record is not None and record != spec.record:
            other = next((d.name for d in DATASETS.values() if d.record == record), f"record {record}")
            raise DataError(f"{to}: already holds the {other} set (Zenodo {record}); download --set "
                            f"{spec.name} into another folder")
    work = to / DOWNLOAD_DIR
    if work.is_dir():
        for other in DATASETS.values():
            if other.root != spec.root and any(work.glob(f"{other.root}.*.done")):
                raise DataError(f"{to}: holds part of the {other.name} set; download --set {spec.name} "
                                f"into another folder")


def download_tau2020(to: str | os.PathLike, base_url: str | None = None,
                     packages: Sequence[Package] | None = None, *, dataset: str = "dev",
                     keep_archives: bool = False, retries: int = 5, retry_wait: float = 2.0,
                     connect_timeout: float = CONNECT_TIMEOUT, stall_bytes: int = STALL_BYTES,
                     stall_window: float = STALL_WINDOW, log=print) -> Path:
    """Fetch, verify and extract every package of `dataset` (a DATASETS key) into `to`; safe to rerun
    after any interruption. `base_url` and `packages` override the record's (mirrors, tests)."""
    spec = dataset_spec(dataset)
    base_url = base_url or spec.base_url
    packages = spec.packages if packages is None else packages
    to = Path(to)
    _refuse_other_set(to, spec)
    names = [p.filename for p in packages]
    marker = to / COMPLETE_MARKER
    if marker.is_file():
        try:
            done = json.loads(marker.read_text(encoding="utf-8")).get("packages")
        except (OSError, ValueError):
            done = None
        if done == names:
            log(f"{to}: already downloaded and extracted ({len(names)} archives)")
            return to
    work = to / DOWNLOAD_DIR
    work.mkdir(parents=True, exist_ok=True)
    pending = [p for p in packages if not (work / f"{p.filename}.done").is_file()]
    sizes = [p.size or 0 for p in pending]  # extracted audio is about as large as its archive
    need = sum(sizes) + (sum(sizes) if keep_archives else max(sizes, default=0))
    free = shutil.disk_usage(work).free
    if need and free < need:
        raise DataError(f"{to}: about {need / 2**30:.1f} GiB of free space needed, {free / 2**30:.1f} GiB "
                        f"available; free some space or choose another folder")
    base = base_url if base_url.endswith("/") else base_url + "/"
    for i, pkg in enumerate(packages, 1):
        done_marker = work / f"{pkg.filename}.done"
        if done_marker.is_file():
            continue
        log(f"[{i}/{len(packages)}] {pkg.filename}")
        archive = fetch_package(pkg, base + pkg.filename, work / pkg.filename, retries=retries,
                                retry_wait=retry_wait, connect_timeout=connect_timeout,
                                stall_bytes=stall_bytes, stall_window=stall_window)
        count = extract_archive(archive, to, spec.root)
        atomic_write_json(done_marker, {"md5": pkg.md5, "files": count})
        if not keep_archives:
            archive.unlink()
    atomic_write_json(marker, {"record": spec.record, "base_url": base, "packages": names})
    return to
