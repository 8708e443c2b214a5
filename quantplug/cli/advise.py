"""``quantplug advise``: which method fits an accuracy budget, why, what it costs and the command to run."""

from __future__ import annotations

import json

import click

from ._decide_options import model_args_from


def _yes_no(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


@click.command("advise")
@click.option("--max-drop", type=float, required=True, metavar="PTS",
              help="Accepted drop of the metric, in points (e.g. 1 for one accuracy point).")
@click.option("--training-data", type=click.Choice(["yes", "no"]), default=None,
              help="Labelled training data is available [default: yes, or the workload's answer].")
@click.option("--priority", type=click.Choice(["accuracy", "speed"]), default="accuracy", show_default=True,
              help="speed: a result soon matters more than the last tenth of a point.")
@click.option("--model-kind", type=click.Choice(["cnn", "transformer", "linear-heavy"]), default="cnn",
              show_default=True)
@click.option("--calibration-data", type=click.Choice(["yes", "no"]), default="yes", show_default=True,
              help="A few hundred unlabeled representative inputs are available.")
@click.option("--weight-bits", type=click.Choice(["8", "4"]), default="8", show_default=True)
@click.option("--workload", default=None, help="Name the workload in the printed command.")
@click.option("--model", "model_spec", default=None, metavar="SPEC", help="Name the model in the printed command.")
@click.option("--data", "data_spec", default=None, metavar="SPEC", help="Name the data in the printed command.")
@click.option("--output", default="quantized", show_default=True, help="Output folder in the printed command.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def command(max_drop: float, training_data: str | None, priority: str, model_kind: str, calibration_data: str,
            weight_bits: str, workload: str | None, model_spec: str | None, data_spec: str | None, output: str,
            as_json: bool) -> None:
    """Recommend PTQ, QAT, QAD or dynamic quantization for an accuracy budget, and explain why."""
    from ..decide.advise import RULES, Situation, advise

    has_labels = _yes_no(training_data)
    if has_labels is None and workload is not None:
        from ..registry import build_registry

        has_labels = bool(getattr(build_registry().workload(workload), "has_labels", True))
    situation = Situation(max_drop=max_drop, training_data=True if has_labels is None else has_labels,
                          priority=priority,  # type: ignore[arg-type]
                          model_kind=model_kind,  # type: ignore[arg-type]
                          calibration_data=calibration_data == "yes", weight_bits=int(weight_bits))
    advice = advise(situation, model_args=model_args_from(workload, model_spec, data_spec), output=output)
    if as_json:
        data = advice.to_dict()
        data["rules"] = [{"name": r.name, "when": r.when, "choice": r.choice} for r in RULES]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Choice: {advice.choice.upper()}   (rule {advice.rule}: {advice.when})")
    click.echo(f"Why:    {advice.reason}")
    click.echo(f"Cost:   {advice.cost}")
    click.echo(f"Needs:  {advice.needs}")
    for note in advice.notes:
        click.echo(f"Note:   {note}")
    click.echo("Run:")
    click.echo(f"  {advice.command_line}")
