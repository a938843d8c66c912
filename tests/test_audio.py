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
