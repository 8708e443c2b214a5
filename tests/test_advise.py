"""`quantplug advise`: every branch of the flowchart, and the printed command is a valid invocation."""

from __future__ import annotations

import json

import click
import pytest

from quantplug.cli import build_cli
from quantplug.decide.advise import RULES, Situation, advise
from quantplug.errors import ConfigError

from .conftest import run_cli


def parse(argv: list[str] | tuple[str, ...]) -> click.Context:
    """Parse a `quantplug ...` argv with the real click commands (validates options and choices)."""
    cli = build_cli()
    with cli.make_context("quantplug", list(argv)[:1]) as ctx:
        command = cli.get_command(ctx, argv[0])
        assert command is not None, f"no command {argv[0]!r}"
        return command.make_context(argv[0], list(argv[1:]))


@pytest.mark.parametrize(
    ("situation", "choice", "rule"),
    [
        (Situation(max_drop=0.5, training_data=True), "qat", "tight-with-labels"),
        (Situation(max_drop=0.5, training_data=False), "qad", "tight-without-labels"),
        (Situation(max_drop=1.0, training_data=True), "ptq", "loose-tolerance"),
        (Situation(max_drop=2.0, training_data=False), "ptq", "loose-tolerance"),
        (Situation(max_drop=0.2, training_data=True, priority="speed"), "ptq", "speed-first"),
        (Situation(max_drop=0.5, model_kind="linear-heavy", calibration_data=False), "dynamic",
         "linear-without-calibration"),
        (Situation(max_drop=2, model_kind="transformer", calibration_data=False, training_data=False), "dynamic",
         "linear-without-calibration"),
        (Situation(max_drop=2, calibration_data=False, training_data=False), "dynamic", "no-inputs"),
        (Situation(max_drop=0.5, calibration_data=False, training_data=True), "qat", "tight-with-labels"),
    ],
)
def test_each_rule(situation: Situation, choice: str, rule: str) -> None:
    advice = advise(situation)
    assert (advice.choice, advice.rule) == (choice, rule)
    assert advice.reason and advice.cost and advice.needs
    ctx = parse(advice.command)
    assert ctx.command.name == ("tune" if choice == "ptq" else "quantize")
    if choice != "ptq":
        assert ctx.params["method"] == choice


def test_every_rule_is_reachable() -> None:
    situations = [Situation(max_drop=d, training_data=t, priority=p, model_kind=k, calibration_data=c)  # type: ignore[arg-type]
                  for d in (0.3, 1, 3) for t in (True, False) for p in ("accuracy", "speed")
                  for k in ("cnn", "transformer", "linear-heavy") for c in (True, False)]
    assert {advise(s).rule for s in situations} == {r.name for r in RULES}


def test_qat_cost_names_epochs_and_lr_and_int4_takes_more_epochs() -> None:
    a8 = advise(Situation(max_drop=0.5))
    a4 = advise(Situation(max_drop=0.5, weight_bits=4))
    assert a8.epochs == 3 and "3 epochs" in a8.cost and "1/10" in a8.cost
    assert a4.epochs == 5 and "--weight-bits" in a4.command
    assert parse(a4.command).params["weight_bits"] in ("4", 4)


def test_transformer_qad_fine_tunes_at_the_pretrained_rate() -> None:
    advice = advise(Situation(max_drop=0.3, model_kind="transformer", training_data=False),
                    model_args=("--workload", "minilm"))
    ctx = parse(advice.command)
    assert advice.choice == "qad" and ctx.params["lr_scale"] == 1.0 and ctx.params["train_batch_size"] == 32
    assert any("--lr-scale 1" in n for n in advice.notes)
    cnn = parse(advise(Situation(max_drop=0.3, training_data=False)).command)
    assert cnn.params["lr_scale"] is None  # others keep the default tenth


def test_commands_name_the_model_and_parse() -> None:
    advice = advise(Situation(max_drop=1.5), model_args=("--model", "m.py:make", "--data", "d.py:data"),
                    output="out dir")
    ctx = parse(advice.command)
    assert ctx.params["model_spec"] == "m.py:make" and ctx.params["data_spec"] == "d.py:data"
    assert ctx.params["max_drop"] == 1.5 and ctx.params["output"] == "out dir"
    assert advice.command_line.endswith("--output 'out dir'")


def test_invalid_situation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max-drop"):
        Situation(max_drop=-1)
    with pytest.raises(ConfigError, match="model kind"):
        Situation(max_drop=1, model_kind="rnn")  # type: ignore[arg-type]


def test_cli_text_and_json() -> None:
    result = run_cli("advise", "--max-drop", "0.5", "--training-data", "no", "--workload", "digits-mobilenet")
    assert result.returncode == 0, result.stderr
    assert "Choice: QAD" in result.stdout and "unlabeled" in result.stdout
    command_line = result.stdout.strip().splitlines()[-1].strip()
    assert command_line.startswith("quantplug quantize --workload digits-mobilenet --method qad")

    result = run_cli("advise", "--max-drop", "1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["choice"] == "ptq" and data["command"][0] == "tune"
    assert [r["name"] for r in data["rules"]] == [r.name for r in RULES]
    assert parse(data["command"]).command.name == "tune"


def test_cli_error_is_one_line() -> None:
    result = run_cli("advise", "--max-drop", "-2")
    assert result.returncode == 2 and result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
