"""`slime inspect`: conditions, the live pods and archive elites they select, and its errors."""

import pytest
from slime.core import DESCRIPTOR_NAMES
from slime.proto import ConfigError
from slime.tools import cli
from slime.tools.query import Condition, format_report, inspect_run, parse_conditions


def test_conditions_parse_every_operator_with_spaces_and_exponents():
    got = parse_conditions(" attention_distance<0.3, activation_sparsity >= 1e-2,weight_spread>-2")
    assert got == (
        Condition("attention_distance", "<", 0.3),
        Condition("activation_sparsity", ">=", 0.01),
        Condition("weight_spread", ">", -2.0),
    )
    assert parse_conditions("weight_spread<=+.5E+1,weight_spread>1.") == (
        Condition("weight_spread", "<=", 5.0),
        Condition("weight_spread", ">", 1.0),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"expected conditions like"),
        ("attention_distance=0.3", r"cannot read 'attention_distance=0.3'"),
        ("attention_distance<0.3,", r"cannot read ''"),
        ("speed<1", r"unknown descriptor 'speed' in 'speed<1'; expected one of attention_distance"),
        ("weight_spread<abc", r"'abc' in 'weight_spread<abc' is not a number"),
        ("weight_spread<nan", r"'nan' in 'weight_spread<nan' is not a number: expected plain"),
        # before: float() read the next four as 10, inf, -inf and 3: a bound the user did not write
        ("attention_distance<1_0", r"'1_0' in 'attention_distance<1_0' is not a number"),
        ("weight_spread<=inf", r"'inf' in 'weight_spread<=inf' is not a number"),
        ("weight_spread>-Infinity", r"'-Infinity' in 'weight_spread>-Infinity' is not a number"),
        ("weight_spread<\u0663", r"'\u0663' in 'weight_spread<\u0663' is not a number"),
        ("weight_spread<.", r"'\.' in 'weight_spread<\.' is not a number"),
        ("weight_spread<1e", r"'1e' in 'weight_spread<1e' is not a number"),
        ("weight_spread<1e400", r"'1e400' in 'weight_spread<1e400' is beyond the float64 range"),
        ("weight_spread>-1e400", r"'-1e400' in 'weight_spread>-1e400' is beyond the float64"),
        ("<0.3", r"cannot read '<0.3'"),
    ],
)
def test_bad_conditions_raise_naming_the_part(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_conditions(text)


def live_pods(model):
    """(layer, slot, descriptors, fitness) of every live pod, read pod by pod."""
    found = []
    for layer, organism in enumerate(model.organisms):
        for slot in organism.live_slots():
            pod = organism.pod(slot)
            found.append((layer, slot, tuple(pod.descriptors.double().tolist()), pod.fitness))
    return found


def elites(model):
    return [(layer, e) for layer, o in enumerate(model.organisms) for e in o.archive]


def test_without_conditions_everything_is_listed(slime_run):
    _, model, _ = slime_run
    report = inspect_run(slime_run[0])
    assert [(p.layer, p.slot) for p in report.pods] == [(x[0], x[1]) for x in live_pods(model)]
    assert report.live_pods == len(report.pods) > 0
    assert [(e.layer, e.cell) for e in report.elites] == [(i, e.cell) for i, e in elites(model)]
    assert report.archived == len(report.elites) > 0
    assert report.archive_names == DESCRIPTOR_NAMES[: model.organisms[0].archive.descriptor_dim]


def test_conditions_select_the_pods_and_elites_inside_the_box(slime_run):
    run_dir, model, _ = slime_run
    pods, archived = live_pods(model), elites(model)
    cut = sorted(p[2][0] for p in pods)[len(pods) // 2]  # the median attention distance
    spars = sorted(e.descriptor[1].item() for _, e in archived)[len(archived) // 2]
    report = inspect_run(run_dir, f"attention_distance<{cut!r},activation_sparsity>={spars!r}")
    expected_pods = [(p[0], p[1]) for p in pods if p[2][0] < cut and p[2][1] >= spars]
    assert [(p.layer, p.slot) for p in report.pods] == expected_pods
    expected_elites = [
        (i, e.cell)
        for i, e in archived
        if e.descriptor[0].item() < cut and e.descriptor[1].item() >= spars
    ]
    assert [(e.layer, e.cell) for e in report.elites] == expected_elites
    assert 0 < len(expected_elites) < len(archived)
    for match in report.pods:
        (want,) = [p for p in pods if (p[0], p[1]) == (match.layer, match.slot)]
        assert match.descriptors == pytest.approx(want[2]) and match.fitness == want[3]


def test_strict_and_inclusive_bounds_differ_exactly_at_an_elite(slime_run):
    run_dir, model, _ = slime_run
    layer, elite = elites(model)[0]
    value = elite.descriptor[0].item()
    inclusive = inspect_run(run_dir, f"attention_distance<={value!r},attention_distance>={value!r}")
    strict = inspect_run(run_dir, f"attention_distance<{value!r},attention_distance>={value!r}")
    assert (layer, elite.cell) in [(e.layer, e.cell) for e in inclusive.elites]
    assert (layer, elite.cell) not in [(e.layer, e.cell) for e in strict.elites]


def test_contradictory_conditions_select_nothing(slime_run):
    report = inspect_run(slime_run[0], "attention_distance>0.5,attention_distance<0.5")
    assert report.pods == () and report.elites == () and report.archived > 0


def test_a_descriptor_the_archives_do_not_index_filters_the_pods_only(slime_run):
    run_dir, model, _ = slime_run
    k = model.organisms[0].archive.descriptor_dim
    assert k < len(DESCRIPTOR_NAMES), "the tiny run's archives index fewer descriptors"
    name = DESCRIPTOR_NAMES[k]
    pods = live_pods(model)
    cut = sorted(p[2][k] for p in pods)[len(pods) // 2]
    report = inspect_run(run_dir, f"{name}<={cut!r}")
    assert [(p.layer, p.slot) for p in report.pods] == [
        (p[0], p[1]) for p in pods if p[2][k] <= cut
    ]
    assert report.elites == () and name in report.archive_note
    assert "apply to the live pods only" in format_report(report)


def test_cli_prints_both_tables(slime_run, capsys):
    assert cli.inspect_command([str(slime_run[0]), "--where", "attention_distance>=0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "where attention_distance>=0"
    assert out[1].startswith("live pods: ") and out[2].split() == [
        "layer",
        "slot",
        *DESCRIPTOR_NAMES,
        "fitness",
    ]
    elite_header = next(i for i, line in enumerate(out) if line.startswith("archive elites: "))
    assert out[elite_header + 1].split()[:2] == ["layer", "cell"]
    assert out[elite_header + 1].split()[-1] == "objective"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("speed<1", "slime inspect: error: --where: unknown descriptor 'speed'"),
        ("attention_distance 0.3", "cannot read 'attention_distance 0.3'"),
        ("attention_distance<1_0", "--where: '1_0' in 'attention_distance<1_0' is not a number"),
        ("weight_spread<1e400", "--where: '1e400' in 'weight_spread<1e400' is beyond the float64"),
    ],
)
def test_cli_reports_a_bad_condition_in_one_line(slime_run, capsys, where, message):
    assert cli.inspect_command([str(slime_run[0]), "--where", where]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_on_a_run_without_a_model_fails_with_a_message(baseline_run, capsys):
    assert cli.inspect_command([str(baseline_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slime inspect: error: ") and "no saved SlimeModel" in err
