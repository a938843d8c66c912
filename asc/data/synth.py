"""A synthetic acoustic-scene set in exactly the TAU Urban Acoustic Scenes 2020 Mobile layout.

Every recording ("scene-city-location-segment") is rendered from seeded noise, tones and events
typical of its scene, coloured by persistent traits of its recording location (level, reverberation,
background mix, room colouring), then captured by one or more devices (a, b, c, s1-s6): the same
source through each device's response (band limits, resonances, gain, noise floor, compression,
clipping). Splits mirror the real set: device a dominates train, evaluate is balanced over devices,
s4-s6 only appear in evaluate, and train and evaluate share no location. See docs/synthetic-data.md.

Every clip depends only on (seed, its name), so the output is identical byte for byte for any
number of workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from asc.data.tau2020 import DEVICES, FOLD_FILES, META_FILE, SCENES, SYNTHETIC_MARKER, UNSEEN
from asc.errors import DataError
from asc.fileio import atomic_write_json, atomic_write_text

SR = 44100
GENERATOR = "asc.data.synth"
GENERATOR_VERSION = 1
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm",
          "vienna")
SEEN_DEVICES = ("b", "c", "s1", "s2", "s3")
_PROGRESS_FILE = ".synth-in-progress.json"

# ============================================================== which clips exist


@dataclass(frozen=True)
class Preset:
    """Clip counts per split and device (spread evenly over scenes) and locations per scene."""

    train: dict[str, int]
    evaluate: dict[str, int]
    unused_a: int            # device-a recordings in no split (besides the evaluate parallels)
    unused_unseen: int       # per s4-s6: parallels of train recordings, split unused
    train_locations: int     # per scene
    eval_locations: int      # per scene
    # True: the b, c, s1-s6 evaluation clips of a scene are captures of shared recordings (one device-a
    # parallel for all of them, as the real set's simultaneous recordings may overlap); False: one
    # recording, and one unused device-a parallel, per clip
    shared_eval: bool = False


PRESETS: dict[str, Preset] = {
    "tiny": Preset(train={"a": 40, **dict.fromkeys(SEEN_DEVICES, 4)}, evaluate=dict.fromkeys(DEVICES, 3),
                   unused_a=2, unused_unseen=1, train_locations=2, eval_locations=1),
    # 100 evaluation clips per device (per-device accuracy to about ±10 points, 95 %), the other devices'
    # from shared recordings so that synthesis stays about as cheap as with 30
    "small": Preset(train={"a": 650, **dict.fromkeys(SEEN_DEVICES, 40)}, evaluate=dict.fromkeys(DEVICES, 100),
                    unused_a=0, unused_unseen=0, train_locations=16, eval_locations=4, shared_eval=True),
    # the counts of the real development set (version 2)
    "full": Preset(train={"a": 10215, "b": 749, "c": 748, "s1": 750, "s2": 750, "s3": 750},
                   evaluate={**dict.fromkeys(DEVICES, 330), "b": 329, "c": 329},
                   unused_a=3855 - (8 * 330 - 2), unused_unseen=750, train_locations=36, eval_locations=14),
}


@dataclass(frozen=True)
class Recording:
    """One source recording and the device captures made of it: ((device, split), ...)."""

    scene: str
    city: str
    location: str            # "city-number"
    segment: int
    captures: tuple[tuple[str, str], ...]

    @property
    def base(self) -> str:
        return f"{self.scene}-{self.location}-{self.segment}"

    def filename(self, device: str) -> str:
        return f"audio/{self.base}-{device}.wav"


def _share(total: int, index: int, parts: int = len(SCENES)) -> int:
    """`total` split into `parts` near-equal integers; the remainder goes to the first indices."""
    return total // parts + (1 if index < total % parts else 0)


def _rng(seed: int, *key: object) -> np.random.Generator:
    """A generator that depends only on the seed and the key (names, not call order)."""
    digest = hashlib.sha256(repr((GENERATOR_VERSION, seed, *key)).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def plan_recordings(preset: str | Preset, seed: int = 0) -> list[Recording]:
    """All recordings of a preset with their captures, splits, cities, locations and segment ids."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    rng = _rng(seed, "plan")
    city_next = {c: int(rng.integers(1, 90)) * 10 for c in CITIES}
    drafts: list[tuple[str, str, str, list[tuple[str, str]]]] = []
    for si, scene in enumerate(SCENES):
        city_order = [CITIES[i] for i in rng.permutation(len(CITIES))]

        def new_locations(count: int, city_order: list[str] = city_order) -> list[tuple[str, str]]:
            out = []
            for _ in range(count):
                city = city_order[len(out) % len(city_order)] if count >= len(CITIES) else \
                    city_order[int(rng.integers(len(city_order)))]
                out.append((city, f"{city}-{city_next[city]}"))
                city_next[city] += int(rng.integers(1, 30))
            return out

        train_locs, eval_locs = new_locations(p.train_locations), new_locations(p.eval_locations)
        weights = rng.dirichlet(np.full(len(train_locs), 1.5))

        def pick(locs, w=None):
            return locs[int(rng.choice(len(locs), p=w))]

        train = [[*pick(train_locs, weights), [("a", "train")]] for _ in range(_share(p.train["a"], si))]
        for di, dev in enumerate(SEEN_DEVICES):
            n = _share(p.train.get(dev, 0), (si + di) % len(SCENES))
            for j in rng.choice(len(train), size=min(n, len(train)), replace=False):
                train[int(j)][2].append((dev, "train"))
        for di, dev in enumerate(UNSEEN):
            n = _share(p.unused_unseen, (si + di) % len(SCENES))
            for j in rng.choice(len(train), size=min(n, len(train)), replace=False):
                train[int(j)][2].append((dev, "unused"))
        rows = [(scene, city, loc, caps) for city, loc, caps in train]
        for _ in range(_share(p.unused_a, si)):
            rows.append((scene, *pick(train_locs, weights), [("a", "unused")]))
        counts = {dev: _share(p.evaluate.get(dev, 0), (si + di) % len(SCENES))
                  for di, dev in enumerate(DEVICES)}
        for _ in range(counts["a"]):
            rows.append((scene, *pick(eval_locs), [("a", "evaluate")]))
        others = [dev for dev in DEVICES if dev != "a"]
        if p.shared_eval:
            for j in range(max(counts[d] for d in others)):
                caps = [("a", "unused")] + [(dev, "evaluate") for dev in others if j < counts[dev]]
                rows.append((scene, *pick(eval_locs), caps))
        else:
            for dev in others:
                for _ in range(counts[dev]):
                    rows.append((scene, *pick(eval_locs), [("a", "unused"), (dev, "evaluate")]))
        drafts.extend(rows)
    order = rng.permutation(len(drafts))
    segment = int(rng.integers(100, 1000)) * 10
    recordings = []
    for k in order:
        scene, city, loc, caps = drafts[int(k)]
        caps_sorted = tuple(sorted(caps, key=lambda c: DEVICES.index(c[0])))
        recordings.append(Recording(scene, city, loc, segment, caps_sorted))
        segment += 1
    recordings.sort(key=lambda r: (SCENES.index(r.scene), r.location, r.segment))
    return recordings


# ============================================================== signal building blocks

_TABLE = 4096
LOW_RATE_FACTOR = 4          # band-limited components are rendered at SR / 4 and upsampled exactly


@lru_cache(maxsize=8)
def _freqs(n: int, sr: int = SR) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / sr).astype(np.float32)


@lru_cache(maxsize=32)
def _wavetable(harmonics: tuple[float, ...]) -> np.ndarray:
    x = np.arange(_TABLE) / _TABLE
    table = sum(a * np.sin(2 * np.pi * (k + 1) * x) for k, a in enumerate(harmonics))
    return (table / np.sqrt(0.5 * sum(a * a for a in harmonics))).astype(np.float32)


def _osc(freq: np.ndarray | float, n: int, harmonics: tuple[float, ...], sr: int,
         phase: float = 0.0) -> np.ndarray:
    """A harmonic oscillator (unit RMS) following a frequency track in Hz."""
    if np.ndim(freq) == 0:
        ph = phase + np.arange(n) * (float(freq) / sr)
    else:
        ph = phase + np.cumsum(np.asarray(freq, dtype=np.float64) / sr)
    idx = ((ph - np.floor(ph)) * _TABLE).astype(np.int32) & (_TABLE - 1)
    return _wavetable(harmonics)[idx]


def _interp(ctrl: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of control points spread evenly over n samples."""
    ctrl = np.asarray(ctrl, dtype=np.float32)
    hop = math.ceil(n / (len(ctrl) - 1))
    ramp = np.arange(hop, dtype=np.float32) / hop
    out = (ctrl[:-1, None] + (ctrl[1:] - ctrl[:-1])[:, None] * ramp[None, :]).ravel()
    return out[:n] if out.size >= n else np.pad(out, (0, n - out.size), mode="edge")


def _band(f: np.ndarray, lo: float | None, hi: float | None, order: float = 2) -> np.ndarray:
    """Butterworth-like band-pass magnitude (no phase)."""
    g = np.ones_like(f)
    if lo:
        g /= np.sqrt(1 + (lo / np.maximum(f, 1.0)) ** (2 * order))
    if hi:
        g /= np.sqrt(1 + (f / hi) ** (2 * order))
    return g


def _tilt(f: np.ndarray, db_per_octave: float, ref: float = 1000.0) -> np.ndarray:
    return (np.maximum(f, 20.0) / ref) ** (db_per_octave / (20 * math.log10(2)))


def _bump(f: np.ndarray, fc: float, gain_db: float, width_oct: float) -> np.ndarray:
    """A resonance (or notch) of `gain_db`, Gaussian on a log-frequency axis."""
    x = np.log2(np.maximum(f, 1.0) / fc) / width_oct
    return 10 ** (gain_db * np.exp(-0.5 * x * x) / 20)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float32)) + 1e-20))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / _rms(x)


def _add(out: np.ndarray, start: int, sig: np.ndarray) -> None:
    """Add `sig` into `out` at `start`, clipped to the buffer."""
    a, b = max(start, 0), min(start + len(sig), len(out))
    if a < b:
        out[a:b] += sig[a - start:b - start]


# ============================================================== the scene model


@dataclass
class _Ctx:
    """What a component needs: randomness, the sample grid of its layer, and place and city traits."""

    rng: np.random.Generator
    sr: int
    n: int
    f: np.ndarray              # rfft bin frequencies of this layer
    white: np.ndarray          # one complex white spectrum, reused with different shapes and shifts
    speed: np.ndarray          # vehicle speed profile 0..1 (vehicles) or ones
    city: dict
    loc: dict

    def noise(self, mag: np.ndarray) -> np.ndarray:
        """Unit-RMS noise with magnitude response `mag` (each call decorrelated by a random shift)."""
        x = sfft.irfft(self.white * mag, self.n).astype(np.float32)
        return _unit(np.roll(x, int(self.rng.integers(self.n))))

    def filtered(self, x: np.ndarray, mag: np.ndarray) -> np.ndarray:
        return sfft.irfft(sfft.rfft(x) * mag, self.n).astype(np.float32)

    def times(self, rate: float) -> np.ndarray:
        """Event onsets (s) of a Poisson process with `rate` events per second (may start before 0)."""
        dur = self.n / self.sr
        count = self.rng.poisson(rate * (dur + 1.0))
        return np.sort(self.rng.uniform(-1.0, dur, count))

    def osc(self, freq: np.ndarray | float, n: int, harmonics: tuple[float, ...]) -> np.ndarray:
        return _osc(freq, n, harmonics, self.sr, float(self.rng.uniform()))

    def slow(self, rate: float, depth_db: float) -> np.ndarray:
        """A slowly wandering gain (`rate` random dB control points per second)."""
        k = max(2, int(self.n / self.sr * rate) + 2)
        return 10 ** (_interp(self.rng.normal(0, depth_db, k), self.n) / 20)

    def burst(self, seconds: float, tau: float) -> np.ndarray:
        """Exponentially decaying noise: a click, a step, a knock."""
        length = int(seconds * self.sr)
        t = np.arange(length, dtype=np.float32) / self.sr
        return self.rng.standard_normal(length).astype(np.float32) * np.exp(-t / tau)

    def fade(self, seconds: float, attack: float = 0.01, release: float = 0.05) -> np.ndarray:
        length = int(seconds * self.sr)
        env = np.ones(length, dtype=np.float32)
        na, nr = min(length // 2, int(attack * self.sr)), min(length // 2, int(release * self.sr))
        if na:
            env[:na] = np.linspace(0, 1, na, dtype=np.float32)
        if nr:
            env[-nr:] = np.linspace(1, 0, nr, dtype=np.float32)
        return env

    def at(self, seconds: float) -> int:
        return int(seconds * self.sr)


def _voices(ctx: _Ctx, count: int, f0: tuple[float, float], talk: float,
            formants: tuple[float, ...]) -> np.ndarray:
    """`count` voiced talkers (harmonic buzz, syllable envelope, turns) through a vowel-like filter."""
    rng, n, sr = ctx.rng, ctx.n, ctx.sr
    out = np.zeros(n, dtype=np.float32)
    for _ in range(count):
        pitch = rng.uniform(*f0) * ctx.city["voice"] * ctx.slow(6.0, 1.0)
        syll = np.clip(_interp(rng.uniform(-1.0, 1.0, int(n / sr * 9) + 2), n) + talk, 0, 1) ** 1.5
        turn = (_interp(rng.uniform(0, 1, int(n / sr * 0.5) + 2), n) < 0.4 + 0.5 * talk).astype(np.float32)
        out += ctx.osc(pitch, n, (1, 0.7, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.12, 0.1)) * syll * turn
    if not out.any():
        return out
    mag = sum(_bump(ctx.f, fc * ctx.city["voice"], 14, 0.25) for fc in formants) * _band(ctx.f, 100, 5000)
    return _unit(ctx.filtered(out, mag))


def c_babble(ctx: _Ctx) -> np.ndarray:
    """A crowd: speech-shaped noise with faint syllabic modulation."""
    mag = _band(ctx.f, 200, 3500, 2) * _bump(ctx.f, 500 * ctx.city["voice"], 4, 0.7)
    return ctx.noise(mag) * ctx.slow(4.0, 2.0)


def c_talkers(ctx: _Ctx) -> np.ndarray:
    return _voices(ctx, int(ctx.rng.integers(1, 4)), (90, 240), 0.2, (600, 1200, 2500))


def c_children(ctx: _Ctx) -> np.ndarray:
    return _voices(ctx, int(ctx.rng.integers(1, 4)), (250, 400), 0.4, (900, 1800, 3200))


def c_announce(ctx: _Ctx) -> np.ndarray:
    """A public-address voice, band-limited and slightly driven."""
    v = np.tanh(2.0 * _voices(ctx, 1, (100, 200), 0.6, (700, 1400, 2700)))
    v *= ctx.fade(ctx.n / ctx.sr, 0.3, 0.5)
    return _unit(ctx.filtered(v, _band(ctx.f, 350, 3800, 3)))


def c_footsteps(ctx: _Ctx) -> np.ndarray:
    """Walkers: heel-toe pairs of decaying noise bursts; bright on hard floors, dull on soft ground."""
    rng = ctx.rng
    hard = ctx.loc["hard_floor"]
    out = np.zeros(ctx.n, dtype=np.float32)
    for _ in range(int(rng.integers(1, 6))):
        period, gain = rng.uniform(0.45, 0.62), rng.uniform(0.3, 1.0)
        t = rng.uniform(-period, period)
        while t < ctx.n / ctx.sr:
            for dt, g in ((0.0, 1.0), (rng.uniform(0.03, 0.06), 0.5)):
                _add(out, ctx.at(t + dt), g * gain * ctx.burst(0.06, 0.008 if hard else 0.02))
            t += period * rng.uniform(0.93, 1.07)
    mag = _band(ctx.f, 700, 7000) if hard else _band(ctx.f, 150, 1800)
    return ctx.filtered(out, mag) * (4.0 if hard else 2.5)


def c_traffic(ctx: _Ctx) -> np.ndarray:
    """Cars passing: road noise under bell-shaped envelopes, engine tones with a Doppler glide."""
    rng, n, f, sr = ctx.rng, ctx.n, ctx.f, ctx.sr
    dist = ctx.loc["traffic_distance"]
    env = np.full(n, 0.05, dtype=np.float32)
    engines = np.zeros(n, dtype=np.float32)
    for t0 in ctx.times(ctx.city["traffic"] * rng.uniform(0.3, 1.2)):
        w = dist * rng.uniform(0.6, 1.6)
        a, b = max(0, int((t0 - 4 * w) * sr)), min(n, int((t0 + 4 * w) * sr))
        if a >= b:
            continue
        tt = np.arange(a, b, dtype=np.float32) / sr
        e = (1.0 / (1.0 + ((tt - t0) / w) ** 2)) * rng.uniform(0.4, 1.0)
        env[a:b] += e
        doppler = 1 + 0.05 * np.tanh(-(tt - t0) / (0.3 * w))
        engines[a:b] += 0.5 * ctx.osc(rng.uniform(25, 70) * doppler, b - a, (1, 0.8, 0.6, 0.5, 0.3, 0.2)) * e
    road = ctx.noise(_band(f, 60, 2500 / dist, 2) * _tilt(f, -2))
    return road * env + ctx.filtered(engines, _band(f, None, 1500 / dist, 2))


def c_horn(ctx: _Ctx) -> np.ndarray:
    rng = ctx.rng
    out = np.zeros(ctx.n, dtype=np.float32)
    for t0 in ctx.times(0.15):
        dur, fr = rng.uniform(0.2, 0.9), rng.uniform(350, 520)
        m = ctx.at(dur)
        tone = ctx.osc(fr, m, (1, 0.7, 0.5, 0.35, 0.2)) + ctx.osc(fr * 1.26, m, (1, 0.7, 0.5, 0.35))
        _add(out, ctx.at(t0), 0.7 * tone * ctx.fade(dur, 0.01, 0.03))
    return out


def c_rumble(ctx: _Ctx) -> np.ndarray:
    """Low broadband rumble (engines, wheels, ventilation) following the vehicle speed."""
    f = ctx.f
    x = ctx.noise(_band(f, 25, ctx.rng.uniform(80, 300), 2) * _tilt(f, -3))
    return x * (0.3 + ctx.speed) * ctx.slow(1.0, 2.0)


def c_hum(ctx: _Ctx) -> np.ndarray:
    """A combustion engine: rich low harmonic drone whose pitch follows the gear and speed."""
    rng, n = ctx.rng, ctx.n
    gear = _interp(rng.uniform(0, 1, int(n / ctx.sr * 0.4) + 2), n)
    f0 = rng.uniform(18, 32) * (1 + 1.5 * ctx.speed * (0.5 + 0.5 * gear))
    return ctx.osc(f0, n, (1, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1)) * (0.6 + 0.4 * ctx.speed)


def c_whine(ctx: _Ctx) -> np.ndarray:
    """An electric traction motor: a tone gliding with speed (trams and metros)."""
    lo, hi = ctx.rng.uniform(150, 350), ctx.rng.uniform(900, 2200)
    fr = lo + (hi - lo) * ctx.speed
    return (ctx.osc(fr, ctx.n, (1, 0.3, 0.15)) + 0.5 * ctx.osc(fr * 1.5, ctx.n, (1, 0.2))) * (0.2 + ctx.speed)


def c_squeal(ctx: _Ctx) -> np.ndarray:
    """Wheel or brake squeal: a high tone with vibrato."""
    rng = ctx.rng
    out = np.zeros(ctx.n, dtype=np.float32)
    for t0 in ctx.times(0.25):
        dur = rng.uniform(0.4, 3.0)
        tt = np.arange(ctx.at(dur)) / ctx.sr
        fr = rng.uniform(2000, 6000) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 9) * tt))
        _add(out, ctx.at(t0), ctx.osc(fr, len(tt), (1, 0.2)) * ctx.fade(dur, 0.1, 0.3))
    return out


def c_clacks(ctx: _Ctx) -> np.ndarray:
    """Wheels over rail joints: pairs of thumps whose rate follows the speed."""
    rng, n = ctx.rng, ctx.n
    out = np.zeros(n, dtype=np.float32)
    t, spacing = rng.uniform(0, 1), rng.uniform(0.12, 0.2)
    while t < n / ctx.sr:
        v = float(ctx.speed[min(ctx.at(t), n - 1)])
        if v > 0.15:
            for dt in (0.0, spacing / max(v, 0.2)):
                _add(out, ctx.at(t + dt), v * ctx.burst(0.08, 0.015))
        t += rng.uniform(0.7, 1.2) / max(v, 0.25)
    return ctx.filtered(out, _band(ctx.f, 60, 900)) * 5


def c_beeps(ctx: _Ctx) -> np.ndarray:
    """Door-closing beeps; the pitch is the city's."""
    out = np.zeros(ctx.n, dtype=np.float32)
    fr, ratio = ctx.city["beep"], ctx.city["beep_ratio"]
    for t0 in ctx.times(0.12):
        for k in range(int(ctx.rng.integers(2, 6))):
            tone = ctx.osc(fr if k % 2 == 0 else fr * ratio, ctx.at(0.18), (1, 0.3, 0.1))
            _add(out, ctx.at(t0 + 0.3 * k), tone * ctx.fade(0.18, 0.005, 0.02))
    return out


def c_chime(ctx: _Ctx) -> np.ndarray:
    """A public-address "ding-dong" with the city's notes."""
    out = np.zeros(ctx.n, dtype=np.float32)
    decay = np.exp(-np.arange(ctx.at(1.2), dtype=np.float32) / (0.4 * ctx.sr))
    for t0 in ctx.times(0.08):
        for k, fr in enumerate(ctx.city["chime"]):
            _add(out, ctx.at(t0 + 0.45 * k), ctx.osc(fr, len(decay), (1, 0.1, 0.3)) * decay)
    return out * ctx.rng.uniform(0.7, 1.0)


def c_bell(ctx: _Ctx) -> np.ndarray:
    """Tram or bicycle bell: inharmonic decaying partials, rung a few times."""
    rng = ctx.rng
    out = np.zeros(ctx.n, dtype=np.float32)
    decay = np.exp(-np.arange(ctx.at(0.5), dtype=np.float32) / (0.12 * ctx.sr))
    for t0 in ctx.times(0.1):
        fr = rng.uniform(900, 2600)
        partials = ((1, 1), (2.76, 0.5), (5.4, 0.3))
        ring = sum(a * ctx.osc(fr * r, len(decay), (1.0,)) for r, a in partials) * decay
        for k in range(int(rng.integers(1, 4))):
            _add(out, ctx.at(t0 + 0.16 * k), ring)
    return out


def c_ticks(ctx: _Ctx) -> np.ndarray:
    """A bus indicator relay ticking."""
    out = np.zeros(ctx.n, dtype=np.float32)
    for t0 in ctx.times(0.08):
        period = ctx.rng.uniform(0.55, 0.75)
        for k in range(int(ctx.rng.integers(4, 12))):
            _add(out, ctx.at(t0 + k * period), ctx.burst(0.01, 0.0015) * 3)
    return out


def c_wind(ctx: _Ctx) -> np.ndarray:
    """Gusty low wind noise and leaf rustle rising with the gusts."""
    f = ctx.f
    gust = ctx.slow(1.5, 6.0)
    low = ctx.noise(_band(f, 20, ctx.rng.uniform(100, 300), 2) * _tilt(f, -4))
    leaves = ctx.noise(_band(f, 2000, 9000, 2))
    return low * gust + 0.4 * leaves * gust**2 / np.sqrt(np.mean(gust**4))


def c_birds(ctx: _Ctx) -> np.ndarray:
    """Phrases of frequency-swept chirps."""
    rng = ctx.rng
    out = np.zeros(ctx.n, dtype=np.float32)
    for t0 in ctx.times(rng.uniform(0.3, 1.0)):
        lo, hi = sorted(rng.uniform(2000, 8000, 2))
        t, gain = t0, rng.uniform(0.2, 1.0)
        for _ in range(int(rng.integers(3, 9))):
            m = ctx.at(rng.uniform(0.04, 0.18))
            sweep = np.linspace(hi, lo, m) if rng.uniform() < 0.6 else np.linspace(lo, hi, m)
            env = np.sin(np.linspace(0, np.pi, m, dtype=np.float32)) ** 2
            _add(out, ctx.at(t), gain * ctx.osc(sweep, m, (1, 0.1)) * env)
            t += m / ctx.sr + rng.uniform(0.03, 0.15)
    return out


def c_music(ctx: _Ctx) -> np.ndarray:
    """Background music from ceiling speakers: chords, a bass line and a soft beat."""
    rng = ctx.rng
    out = np.zeros(ctx.n, dtype=np.float32)
    root = 110 * 2 ** (rng.integers(0, 12) / 12)
    beat = 60 / rng.uniform(80, 130)
    degrees = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (9, 12, 16))
    kick_t = np.arange(ctx.at(0.15), dtype=np.float32) / ctx.sr
    kick = 0.8 * np.sin(2 * np.pi * 55 * kick_t) * np.exp(-kick_t / 0.05)
    t = -rng.uniform(0, 4 * beat)
    while t < ctx.n / ctx.sr:
        m = ctx.at(4 * beat)
        chord = degrees[int(rng.integers(len(degrees)))]
        seg = sum(ctx.osc(root * 2 ** (d / 12) * 2, m, (1, 0.5, 0.3, 0.2)) for d in chord) / 3
        seg += 0.8 * ctx.osc(root * 2 ** (chord[0] / 12) / 2, m, (1, 0.4, 0.1))
        _add(out, ctx.at(t), seg * ctx.fade(4 * beat, 0.05, 0.3)[:m])
        for k in range(4):
            _add(out, ctx.at(t + k * beat), kick)
        t += 4 * beat
    return _unit(ctx.filtered(out, _band(ctx.f, 120, 7000, 2)))


def c_hvac(ctx: _Ctx) -> np.ndarray:
    """Ventilation: steady broadband noise and the location's own tonal hum."""
    tone = ctx.osc(ctx.loc["hvac_hz"], ctx.n, (1, 0.5, 0.3))
    return ctx.noise(_band(ctx.f, 40, 3000, 1) * _tilt(ctx.f, -2)) + ctx.loc["hvac_tone"] * tone


def c_fountain(ctx: _Ctx) -> np.ndarray:
    return ctx.noise(_band(ctx.f, 300, 12000, 1)) * ctx.slow(8.0, 1.0)


def c_clinks(ctx: _Ctx) -> np.ndarray:
    """Cutlery and glasses: short high inharmonic pings."""
    rng = ctx.rng
    out = np.zeros(ctx.n, dtype=np.float32)
    decay = np.exp(-np.arange(ctx.at(0.12), dtype=np.float32) / (0.03 * ctx.sr))
    for t0 in ctx.times(1.5):
        fr = rng.uniform(2500, 7000)
        ping = (ctx.osc(fr, len(decay), (1.0,)) + 0.5 * ctx.osc(fr * 2.3, len(decay), (1.0,))) * decay
        _add(out, ctx.at(t0), rng.uniform(0.2, 1.0) * ping)
    return out


def c_luggage(ctx: _Ctx) -> np.ndarray:
    """Rolling suitcases: rough band noise in episodes."""
    rng, n = ctx.rng, ctx.n
    env = np.zeros(n, dtype=np.float32)
    for t0 in ctx.times(0.3):
        dur = rng.uniform(1.5, 5.0)
        _add(env, ctx.at(t0), rng.uniform(0.4, 1.0) * ctx.fade(dur, 0.3, 0.5))
    rough = np.abs(_interp(rng.standard_normal(int(n / ctx.sr * 60) + 2), n))
    return ctx.noise(_band(ctx.f, 150, 1500, 2)) * env * (0.5 + rough)


def c_train_pass(ctx: _Ctx) -> np.ndarray:
    """A train arriving at or leaving the platform: a rumble swell and brake squeal."""
    rng, n, f = ctx.rng, ctx.n, ctx.f
    dur = n / ctx.sr
    t = np.arange(n, dtype=np.float32) / ctx.sr
    peak, width = rng.uniform(-0.3, 1.3) * dur, rng.uniform(2.0, 6.0)
    env = 1.0 / (1.0 + ((t - peak) / width) ** 2)
    body = ctx.noise(_band(f, 30, 1200, 2) * _tilt(f, -2)) * env
    squeal = ctx.osc(rng.uniform(2500, 5000), n, (1.0,)) * np.clip(env - 0.6, 0, None) * 0.6
    return body + squeal


# name -> (function, rendered at the low rate); low-rate components stay below SR / (2 * 4) Hz.
COMPONENTS: dict[str, tuple[Callable[[_Ctx], np.ndarray], bool]] = {
    "babble": (c_babble, True), "talkers": (c_talkers, True), "children": (c_children, True),
    "announce": (c_announce, True), "footsteps": (c_footsteps, False), "traffic": (c_traffic, True),
    "horn": (c_horn, True), "rumble": (c_rumble, True), "hum": (c_hum, True), "whine": (c_whine, False),
    "squeal": (c_squeal, False), "clacks": (c_clacks, True), "beeps": (c_beeps, False),
    "chime": (c_chime, False), "bell": (c_bell, False), "ticks": (c_ticks, False), "wind": (c_wind, False),
    "birds": (c_birds, False), "music": (c_music, False), "hvac": (c_hvac, False),
    "fountain": (c_fountain, False), "clinks": (c_clinks, False), "luggage": (c_luggage, True),
    "train_pass": (c_train_pass, True),
}


@dataclass(frozen=True)
class SceneRecipe:
    """Components as (name, level dB, probability of being present), room and loudness ranges."""

    components: tuple[tuple[str, float, float], ...]
    rt60: tuple[float, float]      # seconds
    wet_db: tuple[float, float]    # reverberant tail relative to the direct sound
    level_db: float                # typical loudness, dBFS RMS at device a
    vehicle: bool = False          # follows a speed profile (stops, accelerations)
    hard_floor: float = 0.5        # probability that a location has a hard floor
    traffic_distance: tuple[float, float] = (1.0, 2.0)


SCENE_RECIPES: dict[str, SceneRecipe] = {
    "airport": SceneRecipe(
        (("hvac", 0, 1.0), ("babble", -3, 1.0), ("talkers", -6, 0.6), ("footsteps", -9, 0.8),
         ("luggage", -4, 0.85), ("announce", -5, 0.6), ("chime", -8, 0.4), ("music", -14, 0.1)),
        rt60=(1.2, 2.5), wet_db=(-3, 3), level_db=-30, hard_floor=0.9),
    "bus": SceneRecipe(
        (("hum", 0, 1.0), ("rumble", -3, 1.0), ("talkers", -8, 0.5), ("babble", -14, 0.4), ("beeps", -9, 0.4),
         ("ticks", -10, 0.4), ("announce", -11, 0.3), ("traffic", -12, 0.6)),
        rt60=(0.15, 0.4), wet_db=(-12, -6), level_db=-24, vehicle=True, traffic_distance=(1.5, 3.0)),
    "metro": SceneRecipe(
        (("rumble", 0, 1.0), ("whine", -7, 0.8), ("squeal", -4, 0.6), ("clacks", -6, 0.8), ("beeps", -8, 0.4),
         ("announce", -8, 0.5), ("talkers", -12, 0.4), ("babble", -14, 0.4), ("chime", -12, 0.2)),
        rt60=(0.3, 0.7), wet_db=(-10, -4), level_db=-21, vehicle=True),
    "metro_station": SceneRecipe(
        (("train_pass", -2, 0.7), ("babble", -4, 1.0), ("footsteps", -7, 0.9), ("announce", -5, 0.5),
         ("beeps", -10, 0.4), ("squeal", -9, 0.3), ("hvac", -8, 0.8), ("talkers", -10, 0.4),
         ("luggage", -14, 0.2)),
        rt60=(1.0, 2.2), wet_db=(-4, 2), level_db=-27, hard_floor=0.95),
    "park": SceneRecipe(
        (("birds", 0, 0.9), ("wind", -3, 0.8), ("traffic", -12, 0.6), ("children", -8, 0.4),
         ("talkers", -10, 0.4), ("footsteps", -12, 0.4), ("fountain", -14, 0.1)),
        rt60=(0.05, 0.2), wet_db=(-20, -12), level_db=-34, hard_floor=0.1, traffic_distance=(2.5, 5.0)),
    "public_square": SceneRecipe(
        (("babble", -2, 1.0), ("traffic", -6, 0.8), ("footsteps", -8, 0.7), ("talkers", -6, 0.6),
         ("birds", -10, 0.5), ("fountain", -8, 0.3), ("clinks", -12, 0.3), ("children", -10, 0.3),
         ("bell", -16, 0.1)),
        rt60=(0.1, 0.5), wet_db=(-16, -8), level_db=-29, hard_floor=0.6, traffic_distance=(1.5, 3.5)),
    "shopping_mall": SceneRecipe(
        (("music", -4, 0.8), ("babble", -2, 1.0), ("footsteps", -8, 0.8), ("talkers", -6, 0.6),
         ("hvac", -8, 0.7), ("chime", -10, 0.3), ("clinks", -12, 0.4), ("children", -12, 0.3),
         ("announce", -10, 0.2)),
        rt60=(0.8, 1.8), wet_db=(-5, 1), level_db=-28, hard_floor=0.9),
    "street_pedestrian": SceneRecipe(
        (("footsteps", -2, 1.0), ("talkers", -2, 0.8), ("babble", -6, 0.9), ("traffic", -8, 0.7),
         ("bell", -14, 0.15), ("clinks", -14, 0.2), ("birds", -14, 0.2), ("music", -16, 0.1)),
        rt60=(0.3, 0.8), wet_db=(-12, -6), level_db=-28, hard_floor=0.7, traffic_distance=(1.5, 3.0)),
    "street_traffic": SceneRecipe(
        (("traffic", 0, 1.0), ("horn", -6, 0.4), ("rumble", -8, 0.6), ("footsteps", -16, 0.3),
         ("talkers", -16, 0.3), ("wind", -12, 0.2), ("bell", -16, 0.1)),
        rt60=(0.2, 0.6), wet_db=(-14, -8), level_db=-22, hard_floor=0.5, traffic_distance=(0.5, 1.2)),
    "tram": SceneRecipe(
        (("whine", 0, 0.95), ("rumble", -4, 1.0), ("clacks", -3, 0.9), ("bell", -6, 0.6), ("beeps", -8, 0.4),
         ("announce", -8, 0.4), ("talkers", -10, 0.5), ("babble", -12, 0.4), ("traffic", -12, 0.5),
         ("squeal", -10, 0.3)),
        rt60=(0.25, 0.5), wet_db=(-10, -5), level_db=-24, vehicle=True, traffic_distance=(1.5, 3.0)),
}

# How strongly places differ and how much clips of one place differ (dB standard deviations).
LOCATION_LEVEL_SD = 2.0
LOCATION_MIX_SD = 2.5
CLIP_MIX_SD = 1.5
LOCATION_TILT_SD = 0.7      # dB per octave
LOCATION_PRESENCE_SD = 0.1


@lru_cache(maxsize=64)
def city_traits(seed: int, city: str) -> dict:
    """What a city shares across its places: transit beeps and chimes, voices, traffic density."""
    rng = _rng(seed, "city", city)
    lo = rng.uniform(400, 900)
    return {
        "beep": float(rng.uniform(700, 2800)), "beep_ratio": float(rng.choice([1.0, 0.8, 1.25, 0.75])),
        "chime": (float(lo), float(lo * rng.choice([0.8, 0.75, 1.26]))),
        "voice": float(rng.uniform(0.9, 1.1)), "traffic": float(rng.uniform(0.6, 1.4)),
    }


@lru_cache(maxsize=256)
def location_traits(seed: int, scene: str, location: str) -> dict:
    """Persistent character of one recording place: level, room, colouring, background mix."""
    rng = _rng(seed, "location", scene, location)
    recipe = SCENE_RECIPES[scene]
    lo, hi = recipe.rt60
    return {
        "level_db": float(rng.normal(0, LOCATION_LEVEL_SD)),
        "rt60": float(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
        "wet_db": float(rng.uniform(*recipe.wet_db)),
        "tilt": float(rng.normal(0, LOCATION_TILT_SD)),
        "resonance_hz": float(math.exp(rng.uniform(math.log(150), math.log(4000)))),
        "resonance_db": float(rng.uniform(-4, 4)),
        "mix": {name: float(rng.normal(0, LOCATION_MIX_SD)) for name, _, _ in recipe.components},
        "presence": {name: float(np.clip(p + rng.normal(0, LOCATION_PRESENCE_SD), 0.02, 1.0))
                     for name, _, p in recipe.components},
        "hard_floor": bool(rng.uniform() < recipe.hard_floor),
        "hvac_hz": float(rng.uniform(45, 400)),
        "hvac_tone": float(rng.uniform(0.0, 0.6)),
        "traffic_distance": float(rng.uniform(*recipe.traffic_distance)),
        "room_seed": int(rng.integers(2**31)),
    }


@lru_cache(maxsize=4)
def _room_response(seed: int, scene: str, location: str, n: int) -> np.ndarray:
    """Spectrum of the location's room (direct sound, early reflections, reverberant tail) and colouring.

    Applied by circular convolution over the clip: the tail of the clip's end wraps to its start,
    as in an excerpt of a scene that was already sounding.
    """
    loc = location_traits(seed, scene, location)
    rng = np.random.default_rng(loc["room_seed"])
    f = _freqs(n)
    length = min(n, int(loc["rt60"] * 1.2 * SR))
    t = np.arange(length, dtype=np.float32) / SR
    tail = rng.standard_normal(length).astype(np.float32) * np.exp(-6.9 * t / loc["rt60"])
    tail /= np.sqrt(np.sum(tail**2))
    early = np.zeros(min(n, int(0.05 * SR)), dtype=np.float32)
    for _ in range(4):
        early[int(rng.uniform(0.003, 0.045) * SR) % len(early)] += rng.uniform(0.15, 0.5)
    tail_spec = sfft.rfft(tail, n) * _band(f, None, rng.uniform(4000, 9000), 1)
    spec = 1.0 + sfft.rfft(early, n) + 10 ** (loc["wet_db"] / 20) * tail_spec * np.sqrt(SR * 0.05)
    spec *= _tilt(f, loc["tilt"]) * _bump(f, loc["resonance_hz"], loc["resonance_db"], 0.5)
    return spec.astype(np.complex64)


def _speed_ctrl(rng: np.random.Generator, seconds: float, vehicle: bool) -> np.ndarray:
    """Control points (2 per second) of a vehicle's speed, 0..1: stops, accelerations, cruising."""
    if not vehicle:
        return np.ones(2, dtype=np.float32)
    state, ctrl = rng.uniform(0, 1), []
    for _ in range(int(seconds * 0.5) + 2):
        state = float(np.clip(state + rng.normal(0, 0.35), 0, 1))
        ctrl.append(state)
    return np.asarray(ctrl, dtype=np.float32) ** 1.2


def render_source(seed: int, rec: Recording, n: int) -> np.ndarray:
    """The recording as the air carries it to the devices: its rfft spectrum (length n signal).

    Components are drawn in a fixed order from one generator seeded by the recording's name; the
    band-limited ones at SR/4 (added into the spectrum's low bins), the rest at SR.
    """
    recipe = SCENE_RECIPES[rec.scene]
    loc, city = location_traits(seed, rec.scene, rec.location), city_traits(seed, rec.city)
    rng = _rng(seed, "source", rec.base)
    speed = _speed_ctrl(rng, n / SR, recipe.vehicle)
    n_low = max(2, n // LOW_RATE_FACTOR)
    layers = {}
    for low, (sr, m) in ((False, (SR, n)), (True, (SR // LOW_RATE_FACTOR, n_low))):
        white = (rng.standard_normal(m // 2 + 1, dtype=np.float32)
                 + 1j * rng.standard_normal(m // 2 + 1, dtype=np.float32)).astype(np.complex64)
        layers[low] = _Ctx(rng=rng, sr=sr, n=m, f=_freqs(m, sr), white=white, speed=_interp(speed, m),
                           city=city, loc=loc)
    mix = {False: np.zeros(n, dtype=np.float32), True: np.zeros(n_low, dtype=np.float32)}
    for name, level, _p in recipe.components:
        present = rng.uniform() < loc["presence"][name]
        gain_db = level + loc["mix"][name] + rng.normal(0, CLIP_MIX_SD)
        if present:
            fn, low = COMPONENTS[name]
            mix[low] += fn(layers[low]) * np.float32(10 ** (gain_db / 20))
    spec = sfft.rfft(mix[False])
    spec[: n_low // 2 + 1] += sfft.rfft(mix[True]) * np.float32(n / n_low)
    spec *= _room_response(seed, rec.scene, rec.location, n)
    target = recipe.level_db + loc["level_db"] + rng.normal(0, 1.5)
    power = (2 * np.sum(np.abs(spec) ** 2) - np.abs(spec[0]) ** 2) / n**2
    return (spec * (10 ** (target / 20) / math.sqrt(max(power, 1e-20)))).astype(np.complex64)


# ============================================================== devices


@dataclass(frozen=True)
class DeviceModel:
    """A capture chain: linear response, gain, automatic gain control, compression, clipping, noise."""

    highpass: float
    lowpass: float
    order: float = 2.0
    peaks: tuple[tuple[float, float, float], ...] = ()   # (Hz, dB, width in octaves)
    tilt: float = 0.0                                     # dB per octave around 1 kHz
    gain_db: float = 0.0
    agc: float = 0.0                                      # 0..1: how far the level is pulled to -26 dBFS
    comp_threshold_db: float = 0.0                        # compression above this block level
    comp_ratio: float = 1.0
    drive: float = 0.0                                    # soft clipping (0 = none)
    noise_db: float = -96.0                               # noise floor, dBFS RMS
    noise_tilt: float = 0.0
    mains_hz: float = 0.0                                 # electrical hum in the noise floor


DEVICE_MODELS: dict[str, DeviceModel] = {
    # a: binaural in-ear microphones and a field recorder: flat and quiet
    "a": DeviceModel(highpass=15, lowpass=20000, order=2, noise_db=-90),
    # b, c: phones: band-limited (steep codec low-pass), presence peaks, AGC and compression, noise floor
    "b": DeviceModel(highpass=160, lowpass=11000, order=5, peaks=((2800, 5, 0.6), (800, -3, 0.8)),
                     gain_db=4, agc=0.3, comp_threshold_db=-30, comp_ratio=2, noise_db=-70, noise_tilt=-1),
    "c": DeviceModel(highpass=90, lowpass=15000, order=4, peaks=((5000, 4, 0.5), (180, 3, 0.7)),
                     gain_db=2, agc=0.3, comp_threshold_db=-26, comp_ratio=2, noise_db=-74, noise_tilt=-2),
    # s1-s6: simulated devices (device-a recordings through other responses)
    "s1": DeviceModel(highpass=250, lowpass=8000, order=3, peaks=((1500, 6, 0.7),), gain_db=-3, noise_db=-80),
    "s2": DeviceModel(highpass=120, lowpass=11000, order=2, peaks=((2500, -8, 0.4), (6000, 4, 0.5)),
                      gain_db=2, noise_db=-82),
    "s3": DeviceModel(highpass=400, lowpass=16000, order=2, tilt=2.0, gain_db=-1, noise_db=-80),
    "s4": DeviceModel(highpass=300, lowpass=6000, order=4, peaks=((1000, 6, 0.6),), gain_db=3, drive=1.5,
                      noise_db=-72),
    "s5": DeviceModel(highpass=60, lowpass=7000, order=3, peaks=((400, 6, 0.8),), tilt=-3.0, gain_db=-4,
                      noise_db=-70, mains_hz=50),
    "s6": DeviceModel(highpass=500, lowpass=14000, order=3, peaks=((3500, 5, 0.5), (1200, -5, 0.5)),
                      gain_db=1, noise_db=-66, noise_tilt=3),
}


@lru_cache(maxsize=16)
def _device_response(device: str, n: int) -> np.ndarray:
    d, f = DEVICE_MODELS[device], _freqs(n)
    mag = _band(f, d.highpass, d.lowpass, d.order) * _tilt(f, d.tilt)
    for fc, db, width in d.peaks:
        mag = mag * _bump(f, fc, db, width)
    return (mag * 10 ** (d.gain_db / 20)).astype(np.float32)


def _compress(x: np.ndarray, threshold_db: float, ratio: float, block: int = 512) -> np.ndarray:
    """Block-level downward compression with a smoothed gain (attack/release ~ 50 ms)."""
    from scipy.signal import lfilter

    nb = math.ceil(len(x) / block)
    padded = np.pad(x, (0, nb * block - len(x)))
    level = 10 * np.log10(np.mean(padded.reshape(nb, block) ** 2, axis=1) + 1e-12)
    reduction = np.minimum(0.0, (threshold_db - level) * (1 - 1 / ratio))
    smooth = lfilter([0.4], [1, -0.6], reduction, zi=[0.6 * reduction[0]])[0]
    gain = 10 ** (_interp(np.append(smooth, smooth[-1]), len(x)) / 20)
    return x * gain


def render_device(seed: int, rec: Recording, device: str, source: np.ndarray, n: int) -> np.ndarray:
    """The source as captured by `device`: float32 samples in [-1, 1).

    Order: overdrive of the capsule (before the response), linear response and gain, AGC,
    compression, then the device's own noise (within its band) and mains hum.
    """
    d = DEVICE_MODELS[device]
    rng = _rng(seed, "device", rec.base, device)
    f = _freqs(n)
    if d.drive:
        x = sfft.irfft(source, n).astype(np.float32)
        source = sfft.rfft(np.tanh(d.drive * x * np.float32(10 ** (d.gain_db / 20))) / d.drive)
        source /= np.float32(10 ** (d.gain_db / 20))
    y = sfft.irfft(source * _device_response(device, n), n).astype(np.float32)
    y *= np.float32(10 ** (rng.normal(0, 0.5) / 20))
    if d.agc:
        level = 20 * math.log10(_rms(y))
        y *= np.float32(10 ** ((-26.0 - level) * d.agc / 20))
    if d.comp_ratio > 1:
        y = _compress(y, d.comp_threshold_db, d.comp_ratio).astype(np.float32)
    white = rng.standard_normal(len(f), dtype=np.float32) + 1j * rng.standard_normal(len(f), dtype=np.float32)
    shape = _tilt(f, d.noise_tilt) * _band(f, d.highpass / 2, d.lowpass * 1.5, 1)
    y += _unit(sfft.irfft(white * shape, n).astype(np.float32)) * np.float32(10 ** (d.noise_db / 20))
    if d.mains_hz:
        hum = _osc(d.mains_hz, n, (1, 0.6, 0.4, 0.3), SR, rng.uniform())
        y += np.float32(10 ** ((d.noise_db + 6) / 20)) * hum
    peak = float(np.max(np.abs(y)))
    if peak > 0.98:  # a limiter rather than wrap-around or hard clipping in the file
        y = 0.98 * np.tanh(y / 0.98)
    return np.clip(y, -1.0, 1.0 - 2.0**-23).astype(np.float32)


IR_TAPS = 4095  # 93 ms at 44.1 kHz: an odd length, so the response is centred on a sample


def device_impulse_response(device: str, taps: int = IR_TAPS) -> np.ndarray:
    """The linear part of `device`'s capture chain (band limits, resonances, tilt, gain) as a
    linear-phase FIR of `taps` samples at SR, peak in the middle.

    `render_device` applies this response with zero phase; AGC, compression, overdrive, the random
    level and the noise floor are not linear and are left out. The zero-phase kernel is cut to
    `taps` samples around its centre and tapered with a Hann window.
    """
    if device not in DEVICE_MODELS:
        raise DataError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_MODELS)}")
    if taps < 3 or taps % 2 == 0:
        raise ValueError(f"taps must be odd and at least 3, got {taps}")
    n = 1 << max(16, (4 * taps).bit_length())
    kernel = sfft.irfft(_device_response(device, n).astype(np.float64), n)
    half = taps // 2
    h = np.concatenate([kernel[-half:], kernel[:half + 1]]) * np.hanning(taps + 2)[1:-1]
    return h.astype(np.float32)


def write_device_irs(out: str | os.PathLike, devices: tuple[str, ...] = SEEN_DEVICES,
                     taps: int = IR_TAPS) -> list[Path]:
    """Write each device's `device_impulse_response` as OUT/<device>.wav (32-bit float, SR Hz), for
    `asc data augment --transforms dir --ir-folder OUT`; returns the files."""
    import soundfile as sf

    from asc.fileio import atomic_write_bytes

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a folder for the impulse responses")
    written = []
    for device in devices:
        buf = io.BytesIO()
        sf.write(buf, device_impulse_response(device, taps), SR, subtype="FLOAT", format="WAV")
        path = out / f"{device}.wav"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written


# ============================================================== writing


def _wav_bytes(x: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, SR, subtype="PCM_24", format="WAV")
    return buf.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """Temp file + rename: a clip is either complete or absent (the build marker is written last)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


LAYOUTS = ("tau2020", "tau2022", "folder")
SEGMENT_SECONDS = 1  # tau2022: clips of one second
# folder layout: five of the scenes under names of their own, to show (and test) a dataset whose classes
# are not TAU's
FOLDER_CLASSES: dict[str, str] = {"airport": "departure_hall", "park": "green_space",
                                  "street_traffic": "busy_road", "metro": "underground_train",
                                  "shopping_mall": "indoor_market"}


def layout_files(rec: Recording, layout: str, n: int) -> list[tuple[str, str, str, int, int]]:
    """(device, split, file, first sample, end sample) of every file a recording gives in `layout`."""
    if layout == "tau2020":
        return [(dev, split, rec.filename(dev), 0, n) for dev, split in rec.captures]
    if layout == "tau2022":
        step = SEGMENT_SECONDS * SR
        return [(dev, split, f"audio/{rec.base}-{i}-{dev}.wav", i * step, (i + 1) * step)
                for dev, split in rec.captures for i in range(n // step)]
    if layout == "folder":
        label = FOLDER_CLASSES.get(rec.scene)
        return [] if label is None or not any(d == "a" for d, _ in rec.captures) else \
            [("a", "", f"{label}/{rec.location}-{rec.segment}.wav", 0, n)]
    raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def build_recording(args: tuple) -> int:
    """Render and write all files of one recording; returns the number of files written."""
    seed, rec, n, out, skip_existing, *rest = args
    layout = rest[0] if rest else "tau2020"
    files = layout_files(rec, layout, n)
    if not files or (skip_existing and all((Path(out) / f).is_file() for _, _, f, _, _ in files)):
        return 0
    source = render_source(seed, rec, n)
    rendered: dict[str, np.ndarray] = {}
    for dev, _, rel, start, end in files:
        if dev not in rendered:
            rendered[dev] = render_device(seed, rec, dev, source, n)
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, _wav_bytes(rendered[dev][start:end]))
    return len(files)


def _tables(recordings: list[Recording], layout: str = "tau2020", n: int = 0) -> dict[str, str]:
    if layout == "folder":
        return {}
    meta, folds = ["filename\tscene_label\tidentifier\tsource_label"], {s: [] for s in FOLD_FILES}
    for rec in recordings:
        for dev, split, name, _, _ in layout_files(rec, layout, n):
            meta.append(f"{name}\t{rec.scene}\t{rec.location}\t{dev}")
            if split in ("train", "evaluate"):
                folds[split].append(f"{name}\t{rec.scene}")
            if split == "evaluate":
                folds["test"].append(name)
    return {
        META_FILE: "\n".join(meta) + "\n",
        FOLD_FILES["train"]: "\n".join(["filename\tscene_label", *folds["train"]]) + "\n",
        FOLD_FILES["evaluate"]: "\n".join(["filename\tscene_label", *folds["evaluate"]]) + "\n",
        FOLD_FILES["test"]: "\n".join(["filename", *folds["test"]]) + "\n",
    }


def _counts(recordings: list[Recording], layout: str = "tau2020", n: int = 0) -> dict[str, dict[str, int]]:
    c: dict[str, Counter] = {}
    if layout == "folder":
        for rec in recordings:
            for _, _, rel, _, _ in layout_files(rec, layout, n):
                c.setdefault("files", Counter())[rel.split("/")[0]] += 1
        return {s: dict(sorted(v.items())) for s, v in c.items()}
    for rec in recordings:
        for dev, split, _, _, _ in layout_files(rec, layout, n):
            c.setdefault(split, Counter())[dev] += 1
    return {s: {d: c[s][d] for d in DEVICES if c[s][d]} for s in ("train", "evaluate", "unused") if s in c}


@dataclass(frozen=True)
class SynthResult:
    root: Path
    files: int          # clips in the set
    written: int        # clips written by this call (0 when already complete)
    seconds: float
    counts: dict[str, dict[str, int]]


def _params(preset: str, seed: int, duration: float, layout: str = "tau2020") -> dict:
    out = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "preset": preset, "seed": seed,
           "duration_s": duration, "sample_rate": SR, "subtype": "PCM_24", "channels": 1}
    if layout != "tau2020":  # sets built before layouts existed are tau2020 and stay "the same settings"
        out["layout"] = layout
        if layout == "tau2022":
            out["clip_s"] = SEGMENT_SECONDS
    return out


def _default_workers() -> int:
    from asc.cpus import usable_cpus

    return min(usable_cpus(), 8)


def _remove_earlier_build(out: Path, record: Path) -> None:
    """Delete the files an earlier build wrote, as its settings name them, and nothing else: files of
    the user's beside them (under audio/ too) stay; folders left empty go."""
    try:
        stored = json.loads(record.read_text(encoding="utf-8"))
        layout = stored.get("layout", "tau2020")
        n = int(round(float(stored["duration_s"]) * SR))
        recordings = plan_recordings(str(stored["preset"]), int(stored["seed"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{record}: unreadable record of the earlier build ({exc}); remove the folder "
                        "yourself or choose another") from None
    folders = set()
    for rec in recordings:
        for _, _, rel, _, _ in layout_files(rec, layout, n):
            path = out / rel
            path.unlink(missing_ok=True)
            path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
            folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def synthesize(out: str | os.PathLike, preset: str = "small", seed: int = 0, duration: float = 10.0,
               workers: int | None = None, force: bool = False, layout: str = "tau2020") -> SynthResult:
    """Write a synthetic set to `out` in `layout` (LAYOUTS: TAU 2020 Mobile, TAU 2022 Mobile's 1-s
    segments, or a folder per class); resumes an interrupted build with the same settings.

    A folder that holds anything else is left alone (DataError), except a synthetic set built with
    other settings when `force` is given.
    """
    from asc.progress import progress

    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not (0.1 <= duration <= 60):
        raise DataError(f"--duration {duration}: choose between 0.1 and 60 seconds")
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "tau2022" and (duration < SEGMENT_SECONDS or duration != int(duration)):
        raise DataError(f"--duration {duration}: the tau2022 layout cuts recordings into 1-s clips; give a "
                        "whole number of seconds")
    started = time.perf_counter()
    out = Path(out)
    params = _params(preset, int(seed), float(duration), layout)
    marker, pending = out / SYNTHETIC_MARKER, out / _PROGRESS_FILE
    recordings = plan_recordings(preset, int(seed))
    n = int(round(duration * SR))
    counts = _counts(recordings, layout, n)
    total = sum(len(layout_files(r, layout, n)) for r in recordings)

    def same(path: Path) -> bool:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return {k: stored.get(k) for k in params} == params

    if marker.is_file() and same(marker) and not pending.exists():
        return SynthResult(out, total, 0, time.perf_counter() - started, counts)
    ours = marker.is_file() or pending.is_file()
    resume = pending.is_file() and same(pending)
    if out.exists() and any(out.iterdir()) and not resume:
        if not ours:
            raise DataError(f"{out}: folder is not empty and holds no synthetic set; choose a new folder")
        if not force:
            raise DataError(f"{out}: holds a synthetic set built with other settings; pass --force to "
                            f"replace it or choose another folder")
        _remove_earlier_build(out, marker if marker.is_file() else pending)
        for rel in (SYNTHETIC_MARKER, META_FILE, *FOLD_FILES.values()):
            (out / rel).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if layout != "folder":
        (out / "audio").mkdir(parents=True, exist_ok=True)
    atomic_write_json(pending, params)

    jobs = [(int(seed), rec, n, str(out), resume, layout) for rec in recordings]
    written = 0
    workers = _default_workers() if workers is None else max(1, int(workers))
    bar = progress(total=total, desc="synth", unit="clip")
    try:
        if workers == 1:
            for job in jobs:
                written += build_recording(job)
                bar.update(len(layout_files(job[1], layout, n)))
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                for job, k in zip(jobs, pool.imap(build_recording, jobs, chunksize=8)):
                    written += k
                    bar.update(len(layout_files(job[1], layout, n)))
    finally:
        bar.close()
    for rel, text in _tables(recordings, layout, n).items():
        atomic_write_text(out / rel, text)
    info = {**params, "counts": counts, "files": total,
            "note": "Synthetic data generated by asc.data.synth; not real recordings. Results on it say "
                    "nothing about real-world accuracy."}
    atomic_write_json(marker, info)
    pending.unlink()
    return SynthResult(out, total, written, time.perf_counter() - started, counts)
