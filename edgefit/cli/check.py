"""`edgefit check` and `edgefit profiles list|show`: device profiles and the fit verdicts against them.

0 fits, 1 over budget, 2 (via EdgefitError in edgefit.cli.main) bad input.
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgefit.cli.options import (
    EXIT_OVER_BUDGET,
    AllTargetsOpt,
    AssumeDimsOpt,
    CustomOpOpt,
    DimOpt,
    FormatOpt,
    InputShapeOpt,
    InputValueOpt,
    JsonOpt,
    MaxFlashOpt,
    MaxLatencyOpt,
    MaxPowerOpt,
    MaxRamOpt,
    ModelArg,
    PrecisionOpt,
    ProfilesDirOpt,
    RateOpt,
    ReportFormat,
    RuntimeOpt,
    TargetsOpt,
    console,
    json_or_format,
    parse_assume_dims,
    parse_custom_ops,
    parse_dims,
    parse_input_shapes,
    parse_input_values,
    print_json,
    targets_or_all,
    write_report,
)

profiles_app = typer.Typer(help="List and inspect device profiles.", no_args_is_help=True)


@profiles_app.command("list")
def profiles_list(profiles_dir: ProfilesDirOpt = None, json_out: JsonOpt = False) -> None:
    """Every known device: tier, RAM, flash, peak compute, power, runtime."""
    from edgefit.devices.profiles import list_profiles
    from edgefit.report.check_terminal import render_profiles

    profiles = list_profiles(profiles_dir)
    if json_out:
        print_json({"profiles": [p.to_dict() for p in profiles]})
    else:
        render_profiles(console, profiles)


@profiles_app.command("show")
def profiles_show(
    name: Annotated[str, typer.Argument(help="Profile name or alias, e.g. esp32-cam, or a profile file (.toml).",
                                        show_default=False)],
    profiles_dir: ProfilesDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One device profile with the source of every number."""
    from edgefit.devices.profiles import load_profile
    from edgefit.report.check_terminal import render_profile

    profile = load_profile(name, profiles_dir)
    if json_out:
        print_json(profile.to_dict())
    else:
        render_profile(console, profile)


def check(
    model: ModelArg,
    target: TargetsOpt = None,
    all_targets: AllTargetsOpt = False,
    precision: PrecisionOpt = None,
    rate: RateOpt = None,
    max_ram: MaxRamOpt = None,
    max_flash: MaxFlashOpt = None,
    max_latency: MaxLatencyOpt = None,
    max_power: MaxPowerOpt = None,
    runtime: RuntimeOpt = None,
    profiles_dir: ProfilesDirOpt = None,
    input_shape: InputShapeOpt = None,
    dim: DimOpt = None,
    assume_dims: AssumeDimsOpt = None,
    custom_op: CustomOpOpt = None,
    input_value: InputValueOpt = None,
    output_format: FormatOpt = ReportFormat.table,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object (same as --format json).")] = False,
) -> None:
    """Does the model fit the device(s)? RAM, flash, latency and power verdicts (estimates) with margins; with
    --all, the tier summary too."""
    targets = targets_or_all(target, all_targets, required=True, profiles_dir=profiles_dir)
    output_format = json_or_format(output_format, json_out)
    from edgefit.devices.check import Budgets
    from edgefit.devices.check import check as check_model
    from edgefit.report.check_terminal import render_check

    report = check_model(
        model, targets, precision.value if precision else None,
        Budgets.parse(max_ram, max_flash, max_latency, max_power), rate,
        profiles_dir=profiles_dir, input_shapes=parse_input_shapes(input_shape), dims=parse_dims(dim),
        runtime=runtime, assume_dims=parse_assume_dims(assume_dims), custom_ops=parse_custom_ops(custom_op),
        input_values=parse_input_values(input_value),
    )
    write_report(report, output_format, lambda out, r: render_check(out, r, detailed=not all_targets))
    if not report.fits:
        raise typer.Exit(EXIT_OVER_BUDGET)


def register(app: typer.Typer) -> None:
    app.add_typer(profiles_app, name="profiles")
    app.command()(check)
