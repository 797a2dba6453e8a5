"""minidl.experiments.config: the one field table that the API and the command line share."""

import argparse
import dataclasses

import pytest

from minidl import cli
from minidl.experiments import config as config_module
from minidl.experiments.config import FIELDS, ExperimentConfig, Field, Option


def _parse(*argv):
    parser = cli.build_parser()
    return parser.parse_args(list(argv))


def test_every_field_is_in_the_table_in_order():
    assert [f.name for f in FIELDS] == [f.name for f in dataclasses.fields(ExperimentConfig)]
    for f in FIELDS:
        assert isinstance(f.option, Option)
        if f.name == "lr":  # None: the optimizer's default, the course's 0.1 without one
            assert f.default is None and ExperimentConfig().lr == 0.1
        else:
            assert f.default == getattr(ExperimentConfig(), f.name)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_command_line_defaults_are_the_table_defaults(command):
    args = _parse(command)
    options = cli._config_options(args, command)
    if command == "compare":  # several-valued options hold a list of one default
        options = {k: (v[0] if isinstance(v, list) else v) for k, v in options.items()}
    assert ExperimentConfig(**options) == ExperimentConfig()
    assert set(options) == {f.name for f in FIELDS if command in f.option.commands}


def test_gradcheck_offers_the_model_fields_with_its_own_defaults():
    args = _parse("gradcheck")
    options = cli._config_options(args, "gradcheck")
    assert "lr" not in options and "iters" not in options
    assert options["dataset"] == "mnist-mini" and options["batch_size"] == 3
    assert options["hidden"] == ExperimentConfig().hidden


def test_help_shows_choices_and_defaults_from_the_table(capsys):
    with pytest.raises(SystemExit):
        _parse("compare", "--help")
    out = capsys.readouterr().out
    for f in FIELDS:
        if "compare" in f.option.commands:
            assert f.flag in out
    assert "{relu,sigmoid}" in out and "(default 0.1; with --optimizer" in out
    assert "several: compare them" in out


def test_a_field_added_to_the_table_reaches_the_command_line(monkeypatch):
    # what another developer does to add an option: one entry in the table
    extra = Field("momentum", 0.9, Option(
        check=config_module._positive_number, type=float, help="the momentum",
        commands=("train", "compare")))
    monkeypatch.setattr(config_module, "FIELDS", (*FIELDS, extra))
    args = _parse("compare", "--momentum", "0.5", "0.8")
    assert args.momentum == [0.5, 0.8]
    assert _parse("train").momentum == 0.9
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--momentum", "-1"])


def test_cli_values_are_checked_by_the_table(capsys):
    assert cli.main(["train", "--lr", "nan"]) == 2
    err = capsys.readouterr().err
    assert "--lr" in err and "positive number" in err
    assert cli.main(["train", "--weight-init-std", "huge"]) == 2
    assert "he, relu, xavier, sigmoid" in capsys.readouterr().err


def test_converter_names_the_bad_text():
    field = next(f for f in FIELDS if f.name == "batch_size")
    with pytest.raises(argparse.ArgumentTypeError, match="'ten' is not an integer"):
        cli._converter(field)("ten")
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 1"):
        cli._converter(field)("0")


def test_unknown_field_in_a_dict_config_is_named():
    from minidl.experiments import run_experiment

    with pytest.raises(TypeError, match="unknown option 'learning_rate'"):
        run_experiment({"learning_rate": 0.1})
    with pytest.raises(TypeError, match="unknown option 'hiden'"):
        run_experiment(hiden=3)
