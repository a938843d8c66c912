"""The shared audio loader against files written by soundfile and soxr/librosa as references."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asc.data.audio import ShortAudioError, audio_info, check_audio, file_problem, load_audio
from asc.errors import DataError


def _tone(sr: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize("subtype, tol", [("PCM_16", 2 / 2**15), ("PCM_24", 2 / 2**23),
                                          ("PCM_32", 2 / 2**31), ("FLOAT", 1e-7)])
def test_wav_subtypes_round_trip(tmp_path, subtype, tol):
    x = _tone(44100, 0.5)
    path = tmp_path / f"tone_{subtype}.wav"
    sf.write(path, x, 44100, subtype=subtype)
    y = load_audio(path, duration=None)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol + 1e-7


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("FLAC", "PCM_16"),
                                         ("FLAC", "PCM_24")])
def test_integer_files_read_as_libsndfile_reads_them_as_float(tmp_path, fmt, subtype):
    """16- and 24-bit files are read as int32 and scaled by the loader: the very values libsndfile's own
    float32 read gives, the full scale included (-1 and the largest positive sample)."""
    bits = int(subtype[-2:])
    rng = np.random.default_rng(0)
    ints = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(4000, 2))
    ints[:2] = [[-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], [0, -1]]
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, (ints << (32 - bits)).astype(np.int32), 44100, format=fmt, subtype=subtype)
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(reference, ints / 2.0 ** (bits - 1))  # exact, as the loader assumes
    y = load_audio(path, duration=None, mono=False)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, reference.T)
    np.testing.assert_array_equal(load_audio(path, duration=None), reference.mean(axis=1, dtype=np.float32))


def test_flac_reads(tmp_path):
    x = _tone(44100, 0.25)
    sf.write(tmp_path / "a.flac", x, 44100, subtype="PCM_24")
    y = load_audio(tmp_path / "a.flac", duration=None)
    np.testing.assert_allclose(y, x, atol=2 / 2**23)


def test_stereo_downmix_is_channel_mean(tmp_path):
    x = _tone(44100, 0.2, channels=2)
    sf.write(tmp_path / "st.wav", x, 44100, subtype="FLOAT")
    y = load_audio(tmp_path / "st.wav", duration=None)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-6)
    both = load_audio(tmp_path / "st.wav", duration=None, mono=False)
    assert both.shape == (2, x.shape[0])
    np.testing.assert_allclose(both, x.T, atol=1e-6)


def test_mono_false_on_mono_file_has_channel_axis(tmp_path):
    sf.write(tmp_path / "m.wav", _tone(44100, 0.1), 44100)
    assert load_audio(tmp_path / "m.wav", duration=None, mono=False).shape == (1, 4410)


@pytest.mark.parametrize("orig_sr", [48000, 22050, 16000])
def test_resampling_matches_soxr_hq_and_librosa(tmp_path, orig_sr):
    import librosa
    import soxr

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(orig_sr)).astype(np.float32)  # 1 s
    sf.write(tmp_path / "r.wav", x, orig_sr, subtype="FLOAT")
    y = load_audio(tmp_path / "r.wav", sr=44100, duration=None)
    ref = soxr.resample(x, orig_sr, 44100, quality="HQ")
    np.testing.assert_allclose(y, ref, atol=1e-6)
    lib = librosa.resample(x, orig_sr=orig_sr, target_sr=44100, res_type="soxr_hq")
    n = min(len(y), len(lib))
    assert abs(len(y) - len(lib)) <= 1
    np.testing.assert_allclose(y[:n], lib[:n], atol=1e-6)


def test_resampled_crop_equals_crop_of_whole_resampled_file(tmp_path):
    import soxr

    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(48000 * 2)).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, 48000, subtype="FLOAT")
    y = load_audio(tmp_path / "long.wav", sr=44100, duration=1.0)
    ref = soxr.resample(x, 48000, 44100, quality="HQ")[:44100]
    assert y.shape == (44100,)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_pad_and_crop(tmp_path):
    x = _tone(44100, 0.5)
    sf.write(tmp_path / "short.wav", x, 44100, subtype="FLOAT")
    y = load_audio(tmp_path / "short.wav", duration=1.0)
    assert y.shape == (44100,)
    np.testing.assert_allclose(y[:22050], x, atol=1e-7)
    assert not y[22050:].any()
    assert load_audio(tmp_path / "short.wav", duration=1.0, pad="none").shape == (22050,)
    z = load_audio(tmp_path / "short.wav", duration=0.25)
    np.testing.assert_allclose(z, x[:11025], atol=1e-7)


def test_audio_info(tmp_path):
    sf.write(tmp_path / "i.wav", _tone(22050, 0.5, channels=2), 22050, subtype="PCM_24")
    info = audio_info(tmp_path / "i.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 2, 11025, "PCM_24")
    assert info.duration == pytest.approx(0.5)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.wav: no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match="corrupt.wav"):
        load_audio(bad)
    with pytest.raises(DataError, match="corrupt.wav"):
        audio_info(bad)


def test_truncated_file_is_refused_or_read_short(tmp_path):
    path = tmp_path / "trunc.wav"
    sf.write(path, _tone(44100, 1.0), 44100, subtype="PCM_24")
    raw = path.read_bytes()
    path.write_bytes(raw[:60])  # header and a few bytes of data
    try:
        y = load_audio(path, duration=1.0)
    except DataError as exc:
        assert "trunc.wav" in str(exc)
    else:  # libsndfile may read what is there; then it must be padded to the requested length
        assert y.shape == (44100,)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0), 44100)
    with pytest.raises(DataError, match="empty.wav: empty audio file"):
        load_audio(path)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(DataError, match="zero.wav"):
        load_audio(tmp_path / "zero.wav")


def test_nan_samples_refused(tmp_path):
    x = _tone(44100, 0.1).astype(np.float32)
    x[100] = np.nan
    x[200] = np.inf
    sf.write(tmp_path / "nan.wav", x, 44100, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan.wav: 2 NaN/Inf samples"):
        load_audio(tmp_path / "nan.wav")


def test_bad_arguments():
    with pytest.raises(ValueError):
        load_audio("x.wav", pad="reflect")
    with pytest.raises(ValueError):
        load_audio("x.wav", duration=0)


def test_check_audio_refuses_short_files_beyond_the_tolerance(tmp_path):
    sf.write(tmp_path / "ok.wav", _tone(44100, 0.96), 44100, subtype="PCM_24")  # 0.04 s short: rounding
    assert check_audio(tmp_path / "ok.wav", 1.0).frames == 42336
    sf.write(tmp_path / "short.wav", _tone(44100, 0.9), 44100, subtype="PCM_24")
    with pytest.raises(ShortAudioError, match=r"short.wav: 0.900 s of audio, shorter than the 1 s") as exc:
        check_audio(tmp_path / "short.wav", 1.0)
    assert exc.value.seconds == pytest.approx(0.9)
    assert check_audio(tmp_path / "short.wav").frames == 39690  # no duration asked: any length


def test_check_audio_finds_a_wav_cut_to_200_bytes(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(44100, 10.0), 44100, subtype="PCM_24")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ShortAudioError, match=r"cut.wav: 0.001 s of audio, shorter than the 10 s"):
        check_audio(path, 10.0)


def test_check_audio_reads_float_files_in_full_for_nan(tmp_path):
    x = _tone(44100, 2.0).astype(np.float32)
    x[-5] = np.inf  # past any clip length a loader would read
    sf.write(tmp_path / "late.wav", x, 44100, subtype="FLOAT")
    with pytest.raises(DataError, match=r"late.wav: 1 NaN/Inf samples"):
        check_audio(tmp_path / "late.wav", 1.0)


def test_links_that_loop_or_point_nowhere_are_named_as_such(tmp_path):
    (tmp_path / "loop.wav").symlink_to("loop.wav")
    (tmp_path / "dangling.wav").symlink_to("gone.wav")
    (tmp_path / "dir.wav").mkdir()
    assert file_problem(tmp_path / "loop.wav") == "symbolic link loop (-> loop.wav)"
    assert file_problem(tmp_path / "dangling.wav") == \
        "broken symbolic link (-> gone.wav, which does not exist)"
    assert file_problem(tmp_path / "dir.wav") == "not a regular file (a folder?)"
    assert file_problem(tmp_path / "nope.wav") == "no such audio file"
    with pytest.raises(DataError, match=r"loop.wav: symbolic link loop"):
        load_audio(tmp_path / "loop.wav")


@pytest.mark.parametrize("rate", [1, 999, 800_000])
def test_header_rates_no_recording_has_are_refused_before_decoding(tmp_path, rate):
    """A 4-KB file whose header says 1 Hz would be upsampled to gigabytes: refused by name, in the
    loader and in the verdict `asc data check` gives alike."""
    path = tmp_path / f"rate{rate}.wav"
    sf.write(path, np.zeros(2000, np.float32), rate, subtype="PCM_16")
    for read in (lambda: load_audio(path, duration=None), lambda: load_audio(path, duration=1.0),
                 lambda: check_audio(path)):
        with pytest.raises(DataError, match=rf"rate{rate}.wav: sample rate {rate} Hz is outside 1000-768000"):
            read()


def test_rates_at_the_limits_are_read(tmp_path):
    for rate in (1000, 768_000):
        sf.write(tmp_path / "r.wav", _tone(rate, 0.01), rate, subtype="PCM_16")
        assert load_audio(tmp_path / "r.wav", sr=8000, duration=None).shape == (80,)


def test_files_longer_than_the_limit_are_refused_when_read_whole(tmp_path, monkeypatch):
    from asc.data import audio

    sf.write(tmp_path / "long.wav", _tone(8000, 2.0), 8000, subtype="PCM_16")
    monkeypatch.setattr(audio, "MAX_AUDIO_S", 1.0)
    with pytest.raises(DataError, match=r"long.wav: 0.0 h of audio, more than the 0.000277778 h"):
        load_audio(tmp_path / "long.wav", sr=8000, duration=None)
    assert load_audio(tmp_path / "long.wav", sr=8000, duration=0.5).shape == (4000,)  # a clip of it is fine


@pytest.mark.parametrize("peak", [1e6, 1e20, 1e37])
def test_loud_finite_samples_resample_without_overflow(tmp_path, peak):
    x = _tone(48000, 0.2)
    sf.write(tmp_path / "loud.wav", (x * (peak / 0.5)).astype(np.float32), 48000, subtype="FLOAT")
    y = load_audio(tmp_path / "loud.wav", sr=44100, duration=None)
    sf.write(tmp_path / "quiet.wav", x.astype(np.float32), 48000, subtype="FLOAT")
    ref = load_audio(tmp_path / "quiet.wav", sr=44100, duration=None)
    assert np.isfinite(y).all()
    assert np.abs(y / (peak / 0.5) - ref).max() < 1e-6


def test_samples_at_the_float32_limit_that_overflow_when_resampled_are_named(tmp_path):
    x = np.full(4800, 3.3e38, np.float32)
    x[2400:] = -3.3e38  # a step at the limit overshoots (Gibbs) past float32's 3.4e38 when filtered
    sf.write(tmp_path / "edge.wav", x, 48000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"edge.wav: samples up to 3.3e\+38 leave the float32 range"):
        load_audio(tmp_path / "edge.wav", sr=44100, duration=None)


@pytest.mark.parametrize("value, words", [(0.0, "every sample is 0 (silence)"),
                                          (0.25, "every sample is 0.25")])
def test_constant_files_are_reported_and_still_read(tmp_path, value, words):
    sf.write(tmp_path / "flat.wav", np.full((8000, 2), value, np.float32), 16000, subtype="FLOAT")
    heard = []
    y = load_audio(tmp_path / "flat.wav", sr=8000, duration=None, on_constant=heard.append)
    assert y.shape == (4000,) and len(heard) == 1
    assert str(tmp_path / "flat.wav") in heard[0] and words in heard[0]
    heard.clear()
    load_audio(tmp_path / "flat.wav", sr=8000, duration=None, on_constant=heard.append, mono=False)
    assert len(heard) == 1
    sf.write(tmp_path / "tone.wav", _tone(16000, 0.5), 16000)
    load_audio(tmp_path / "tone.wav", sr=8000, duration=None, on_constant=heard.append)
    assert len(heard) == 1  # a tone is not constant


def test_stereo_that_cancels_to_silence_is_reported(tmp_path):
    x = _tone(8000, 0.5)
    sf.write(tmp_path / "cancel.wav", np.stack([x, -x], axis=1), 8000, subtype="FLOAT")
    heard = []
    load_audio(tmp_path / "cancel.wav", sr=8000, duration=None, on_constant=heard.append)
    assert len(heard) == 1 and "silence" in heard[0]


def test_conform_checks_the_rate_of_arrays():
    from asc.data.audio import conform

    with pytest.raises(DataError, match=r"mine: sample rate 1 Hz"):
        conform(np.zeros((100, 1), np.float32), 1, 8000, name="mine")


def test_check_audio_reads_float_files_in_blocks(tmp_path, monkeypatch):
    from asc.data import audio

    monkeypatch.setattr(audio, "_CHECK_BLOCK", 1000)
    x = _tone(8000, 1.0).astype(np.float32)
    x[[10, 4500, 7999]] = np.nan
    sf.write(tmp_path / "nan3.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan3.wav: 3 NaN/Inf samples"):
        check_audio(tmp_path / "nan3.wav")
