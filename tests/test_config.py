"""The config loader on hostile input: numbers, non-finite values, duplicate keys, tags, encodings,
--set overrides and relative paths. Each bad input is one line naming the file (and line) or the --set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from asc.cli import main
from asc.config import apply_overrides, dump_yaml, load_yaml
from asc.errors import ConfigError
from asc.features.logmel import load_feature_config, resolve_feature_config
from asc.models.common import load_model_config
from asc.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "dcase2020" / "resnet17.yaml"


def _recipe_text() -> str:
    """The shipped ResNet-17 recipe with absolute model/feature paths, to be copied anywhere."""
    return RECIPE.read_text().replace("../../", f"{ROOT}/")


def _line_of(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def _train(capsys, *args) -> tuple[int, list[str]]:
    code = main(["train", *map(str, args), "--device", "cpu"])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture()
def empty_cache(tmp_path) -> Path:
    """A feature-cache root without any cache: `asc train` stops there, after reading the recipe."""
    path = tmp_path / "no_cache"
    path.mkdir()
    return path


# ---------------------------------------------------------------- numbers, everywhere, once


@pytest.mark.parametrize("value", ["1e-3", "1E-3", "+1e-3", "10e-4", "1.0e-3"])
def test_scientific_notation_on_the_command_line_is_a_number(capsys, tmp_path, empty_cache, value):
    code, err = _train(capsys, "--recipe", RECIPE, "--out", tmp_path / "run", "--set", f"train.lr={value}",
                       "--set", f"data.cache={empty_cache}")
    assert code == 2 and len(err) == 1, err
    assert "no feature cache" in err[0] and "--set" not in err[0] and "expected float" not in err[0]
    r = load_recipe(RECIPE, overrides=[f"train.lr={value}"])
    assert r["train"]["lr"] == pytest.approx(1e-3)


def test_numbers_read_as_yaml_1_2_in_every_kind_of_config(tmp_path):
    path = tmp_path / "numbers.yaml"
    path.write_text("a: 1e-3\nb: 1E5\nc: -2.5e-4\nd: .5\ne: -.5\nf: 1.\ng: +1e+3\nh: 010\ni: 0x1f\n"
                    "j: 1_000\nk: 1:30\nl: 2020-01-01\nm: 1e\nn: yes\no: '1e-3'\n")
    assert load_yaml(path) == {"a": 1e-3, "b": 1e5, "c": -2.5e-4, "d": 0.5, "e": -0.5, "f": 1.0, "g": 1e3,
                               "h": 10, "i": 31, "j": 1000, "k": "1:30", "l": "2020-01-01", "m": "1e",
                               "n": True, "o": "1e-3"}
    features = tmp_path / "features.yaml"
    features.write_text("log_offset: 1e-8\nfmin: 5E1\nduration: .5e1\n")
    cfg = load_feature_config(features)
    assert (cfg["log_offset"], cfg["fmin"], cfg["duration"]) == (1e-8, 50.0, 5.0)
    model = tmp_path / "model.yaml"
    model.write_text("name: fcnn\nparams:\n  norm_eps: 1e-3\n  dropout: 3e-1\n")
    assert load_model_config(model)["params"] == {"norm_eps": 1e-3, "dropout": 0.3}


def test_what_is_written_reads_back_the_same_with_this_loader_and_plain_yaml(tmp_path):
    values = {"a": "1e-3", "b": 1e-5, "c": "010", "d": "1:30", "e": "2020-01-01", "f": "yes", "g": 10,
              "h": -0.5, "i": 1e20, "j": "=", "k": None, "l": True}
    path = tmp_path / "out.yaml"
    path.write_text(dump_yaml(values))
    assert load_yaml(path) == values and yaml.safe_load(path.read_text()) == values


# ---------------------------------------------------------------- errors caused by a --set name the --set


@pytest.mark.parametrize("setting, message", [
    ("train.lr=abc", "--set train.lr=abc: expected float, got 'abc'"),
    ("train.lr=.nan", "--set train.lr=.nan: expected a finite number, got nan"),
    ("train.lr=.inf", "--set train.lr=.inf: expected a finite number, got inf"),
    ("train.min_lr=-.inf", "--set train.min_lr=-.inf: expected a finite number, got -inf"),
    ("model_params={dropout: .nan}", "--set model_params={dropout: .nan}: expected a finite number, got nan"),
    ("train.lrr=1e-3", "--set train.lrr=1e-3: unknown key train.lrr"),
    ("=1", "--set =1: an empty key or key part; write key=value"),
    ("train.=1", "--set train.=1: an empty key or key part"),
    ("train.lr", "--set train.lr: no '=' between key and value"),
    ("norm.kind=bn", "--set norm.kind=bn: norm is a value ('bn'), not a section with keys"),
    ("train=5", "--set train=5: this section must be a mapping of keys to values"),
    ("name=!!python/object/apply:os.system ['echo pwned']",
     "--set name=!!python/object/apply:os.system ['echo pwned']: YAML tag !!python/object/apply:os.system "
     "is not allowed"),
    ("model_params={a: 1, a: 2}", "--set model_params={a: 1, a: 2}: duplicate key a"),
    ("train.epochs=!!int ten", "--set train.epochs=!!int ten: 'ten' is not a valid !!int"),
    ("train.milestones=[abc]", "--set train.milestones=[abc]: expected a list of epoch numbers"),
    ("train.micro_batches=5", "--set train.micro_batches=5: train.batch_size 32 is not divisible"),
    ("profile=quick", "--set profile=quick: a profile is chosen with --profile NAME"),
    ("model=nowhere.yaml", "--set model=nowhere.yaml: no such model config"),
])
def test_a_bad_set_is_one_line_naming_the_set_not_the_recipe(capsys, tmp_path, empty_cache, setting, message):
    code, err = _train(capsys, "--recipe", RECIPE, "--out", tmp_path / "run",
                       "--set", f"data.cache={empty_cache}", "--set", setting)
    assert code == 2 and len(err) == 1, err
    assert message in err[0] and "resnet17.yaml" not in err[0], err[0]


def test_bad_norm_and_profile_options_name_the_option(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:  # --norm's choices are the registry's
        _train(capsys, "--recipe", RECIPE, "--out", tmp_path / "run", "--norm", "batchnorm")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --norm: invalid choice: 'batchnorm'" in err, err
    code, err = _train(capsys, "--recipe", RECIPE, "--out", tmp_path / "run", "--profile", "fast")
    assert code == 2 and len(err) == 1 and "--profile fast: unknown profile 'fast'" in err[0], err
    assert "this recipe has: paper, quick" in err[0]


def test_a_bad_set_of_a_feature_config_names_the_set(capsys, tmp_path):
    features = ROOT / "features" / "logmel128_deltas.yaml"
    code = main(["extract", "--data", str(tmp_path), "--features", str(features),
                 "--out", str(tmp_path / "c"), "--set", "log_offset=.nan"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--set log_offset=.nan: expected a finite number" in err[0], err
    raw = load_yaml(features)
    with pytest.raises(ConfigError, match=re.escape("--set n_mels=64.5: expected int, got 64.5")):
        resolve_feature_config(apply_overrides(raw, ["n_mels=64.5"]), str(features))
    cfg = resolve_feature_config(apply_overrides(raw, ["log_offset=1e-6"]), str(features))
    assert cfg["log_offset"] == 1e-6


# ---------------------------------------------------------------- errors in a file name the file and line


def _bad_recipes() -> list[tuple[str, str, str]]:
    """(case, recipe text, expected message with {path} and the line)."""
    text = _recipe_text()
    lr, norm = _line_of(text, "  lr:"), _line_of(text, "norm:")
    name, prof = _line_of(text, "name:"), _line_of(text, "profiles:")
    end = len(text.splitlines()) + 1
    return [
        ("nan", text.replace("  lr: 0.1", "  lr: .nan"),
         f"{{path}}:{lr}: train.lr: expected a finite number, got nan"),
        ("inf in a profile", text + "  slow:\n    train:\n      lr: .inf\nprofile: slow\n",
         f"{{path}}:{end + 2}: train.lr: expected a finite number, got inf"),
        ("duplicate", text.replace("  lr: 0.1", "  lr: 0.1\n  lr: 0.2"),
         f"{{path}}:{lr + 1}: duplicate key train.lr (first given on line {lr})"),
        ("duplicate at the top", text + "norm: l2bn\n",
         f"{{path}}:{end}: duplicate key norm (first given on line {norm})"),
        ("a list at the top", "- name: x\n- model: y\n",
         "{path}:1: the top level must be a mapping of keys to values (key: value lines), not a list"),
        ("python tag",
         text.replace("name: resnet17", "name: !!python/object/apply:os.system ['touch PWNED']"),
         f"{{path}}:{name}: YAML tag !!python/object/apply:os.system is not allowed in a config"),
        ("binary tag", text.replace("name: resnet17", "name: !!binary aGk="),
         f"{{path}}:{name}: YAML tag !!binary is not allowed"),
        ("profiles a list", text.replace("profiles:\n  quick:", "profiles:\n  - quick:"),
         f"{{path}}:{prof}: profiles: must map each profile name to the settings it overrides"),
        ("a profile a number", text + "  slow: 5\n",
         f"{{path}}:{end}: profiles.slow: a profile must be a mapping of the settings it overrides"),
        ("a profile named paper", text + "  paper:\n    seed: 1\n",
         f"{{path}}:{end}: profiles.paper: 'paper' is the recipe itself without a profile"),
        ("a section a number", f"name: x\nmodel: {ROOT}/models/fcnn.yaml\ntrain: 5\n",
         "{path}:3: train: this section must be a mapping of keys to values, got 5"),
        ("unknown key", text.replace("  lr: 0.1", "  lrr: 0.1"), f"{{path}}:{lr}: unknown key train.lrr"),
        ("tab", text.replace("  lr: 0.1", "\tlr: 0.1"),
         f"{{path}}:{lr}: invalid YAML: found character '\\t'"),
        ("recursive alias", "name: &a [*a]\n", "{path}:1: a YAML alias that contains itself"),
        ("a NUL byte", text + "x: a\x00b\n", f"{{path}}:{end}: unacceptable character #x0000"),
    ]


@pytest.mark.parametrize("case, text, message", _bad_recipes(), ids=[c[0] for c in _bad_recipes()])
def test_a_bad_recipe_is_one_line_naming_the_file_and_line(capsys, tmp_path, empty_cache, monkeypatch,
                                                          case, text, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    code, err = _train(capsys, "--recipe", path, "--out", tmp_path / "run",
                       "--set", f"data.cache={empty_cache}")
    assert code == 2 and len(err) == 1, err
    assert message.format(path=path) in err[0], err[0]
    assert not (tmp_path / "PWNED").exists()


def test_a_file_that_is_not_utf8_names_the_line(capsys, tmp_path):
    text = _recipe_text()
    path = tmp_path / "latin1.yaml"
    path.write_bytes(text.replace("task: dcase", "# caf\xe9\ntask: dcase").encode("latin-1", "replace"))
    code, err = _train(capsys, "--recipe", path, "--out", tmp_path / "run")
    line = _line_of(text, "task:")
    assert code == 2 and err == [f"asc train: error: {path}:{line}: not UTF-8 text (byte 0xe9); "
                                 "save the file as UTF-8"], err


def test_duplicate_keys_in_model_and_feature_configs_are_errors(tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text("name: fcnn\nparams:\n  dropout: 0.3\n  dropout: 0.5\n")
    message = f"{model}:4: duplicate key params.dropout (first given on line 3)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_model_config(model)
    features = tmp_path / "features.yaml"
    features.write_text("n_mels: 64\nhop_length: 512\nn_mels: 128\n")
    with pytest.raises(ConfigError, match=re.escape(f"{features}:3: duplicate key n_mels")):
        load_feature_config(features)
    features.write_text("duration: .inf\n")
    with pytest.raises(ConfigError, match=re.escape(f"{features}:1: duration: expected a finite number")):
        load_feature_config(features)


# ---------------------------------------------------------------- relative paths


def test_paths_in_a_file_are_relative_to_it_and_on_the_command_line_to_the_cwd(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "configs").mkdir()
    for src, dst in ((ROOT / "models/fcnn.yaml", "configs/model.yaml"),
                     (ROOT / "features/logmel256.yaml", "configs/features.yaml")):
        (project / dst).write_text(src.read_text())
    recipe = project / "recipes" / "r.yaml"
    recipe.write_text("name: r\nmodel: ../configs/model.yaml\nfeatures: ../configs/features.yaml\n"
                      "data:\n  cache: ../cache\ntrain:\n  epochs: 1\nprofiles:\n  q:\n    data:\n"
                      "      cache: q_cache\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = load_recipe(Path("..") / "project" / "recipes" / "r.yaml")
    assert r["model"]["config"] == str(project / "configs" / "model.yaml")
    assert r["features"] == str(project / "configs" / "features.yaml")
    assert r["data"]["cache"] == str(project / "cache")
    assert load_recipe(recipe, profile="q")["data"]["cache"] == str(project / "recipes" / "q_cache")
    r = load_recipe(recipe, overrides=["data.cache=my_cache", "model=../project/configs/model.yaml",
                                       "features=../project/configs/features.yaml"])
    assert r["data"]["cache"] == str(elsewhere / "my_cache")
    assert r["model"]["config"] == str(project / "configs" / "model.yaml")
    assert r["features"] == str(project / "configs" / "features.yaml")
    cifar = load_recipe(ROOT / "recipes/cifar100/resnet20.yaml", overrides=["data.root=cifar"])
    assert cifar["data"]["root"] == str(elsewhere / "cifar")


def test_a_missing_config_file_says_which_folder_the_path_was_taken_from(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _train(capsys, "--recipe", RECIPE, "--out", tmp_path / "run", "--set", "features=logmel.yaml")
    assert code == 2 and len(err) == 1, err
    assert (f"--set features=logmel.yaml: no such feature config {tmp_path / 'logmel.yaml'} (a relative path "
            "on the command line is taken from the current folder)") in err[0]
    recipe = tmp_path / "sub" / "r.yaml"
    recipe.parent.mkdir()
    text = _recipe_text()
    recipe.write_text(text.replace(f"model: {ROOT}/models/resnet17.yaml", "model: models/resnet17.yaml"))
    code, err = _train(capsys, "--recipe", recipe, "--out", tmp_path / "run")
    assert code == 2 and len(err) == 1, err
    assert (f"{recipe}:{_line_of(text, 'model:')}: model: no such model config "
            f"{tmp_path / 'sub' / 'models' / 'resnet17.yaml'} (a relative path in {recipe} is taken from "
            "that file's folder)") in err[0]
