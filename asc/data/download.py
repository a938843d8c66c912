"""Download TAU Urban Acoustic Scenes 2020 Mobile (development or evaluation set) from Zenodo.

Each set is data in `DATASETS` (record, archive root, published archives), not a code path. Each
archive is fetched into `DIR/.download/NAME.part` (resumed with an HTTP Range request after an
interruption), checked against its published md5, then extracted — refusing absolute paths, '..'
and links — so that DIR holds `audio/` and `evaluation_setup/` (plus `meta.csv` for the development
set). A per-archive marker makes reruns skip finished archives; a final marker makes a rerun of a
finished download a no-op. One DIR holds one set: the two share file names (fold1_test.csv).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
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


_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


def _md5_of(path: Path):
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h


def _fetch(url: str, part: Path, size_hint: int | None, timeout: float) -> str:
    """Append the rest of `url` to `part` (Range from its current size); returns the md5 of the whole."""
    from asc.progress import progress

    have = part.stat().st_size if part.exists() else 0
    h = _md5_of(part) if have else hashlib.md5()
    req = urllib.request.Request(url, headers={"User-Agent": "asc-l2bn"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
            return h.hexdigest()
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored Range: start over
            have, h = 0, hashlib.md5()
            part.unlink(missing_ok=True)
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else size_hint
        bar = progress(total=total, initial=have, desc=part.name.removesuffix(".part"), unit="B",
                       unit_scale=True, unit_divisor=1024)
        received = 0
        try:
            with open(part, "ab") as fh:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    fh.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
        if length is not None and received < int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)
    return h.hexdigest()


def fetch_package(pkg: Package, url: str, dest: Path, *, retries: int = 5, retry_wait: float = 2.0,
                  timeout: float = 60.0) -> Path:
    """Download `url` to `dest` with resume and md5 check; a corrupt result is fetched again once."""
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if _md5_of(dest).hexdigest() == pkg.md5:
            return dest
        dest.unlink()
    corrupt_refetched = False
    failures = 0
    while True:
        try:
            digest = _fetch(url, part, pkg.size, timeout)
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
            raise DataError(f"{url}: download interrupted ({error}); rerun the same command to resume "
                            f"from {part.stat().st_size if part.exists() else 0} bytes")
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
                     timeout: float = 60.0, log=print) -> Path:
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
                                retry_wait=retry_wait, timeout=timeout)
        count = extract_archive(archive, to, spec.root)
        atomic_write_json(done_marker, {"md5": pkg.md5, "files": count})
        if not keep_archives:
            archive.unlink()
    atomic_write_json(marker, {"record": spec.record, "base_url": base, "packages": names})
    return to
