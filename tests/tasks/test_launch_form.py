"""The console's launch form: fields generated from a plugin version's JSON Schema, the
arguments of task_create, and the services' refusals shown at the field they name."""

from django import forms

from ccs.errors import InvalidInput
from plugins.models import Plugin, PluginVersion
from tasks.forms import LaunchForm, params_fields

SCHEMA = {
    "type": "object",
    "properties": {
        "seconds": {"type": "integer", "minimum": 0, "maximum": 10, "description": "how long"},
        "ratio": {"type": "number"},
        "force": {"type": "boolean"},
        "mode": {"enum": ["fast", "safe", 3]},
        "name": {"type": "string", "maxLength": 8},
        "ports": {"type": "array", "items": {"type": "integer"}},
        "extra": {"type": "object"},
    },
    "required": ["seconds"],
    "additionalProperties": False,
}


def _version(schema: dict = SCHEMA) -> PluginVersion:
    return PluginVersion(plugin=Plugin(name="tool"), number=3, params_schema=schema,
                         run_as=["root", "nobody"], timeout=60)


def _form(**data) -> LaunchForm:
    return LaunchForm(_version(), {"run_as": "root", "control.priority": "normal", **data})


def test_each_property_gets_a_field_of_its_type():
    fields = params_fields(SCHEMA)
    assert isinstance(fields["params.seconds"], forms.IntegerField)
    assert fields["params.seconds"].required and fields["params.seconds"].help_text == "how long"
    assert isinstance(fields["params.ratio"], forms.FloatField)
    assert isinstance(fields["params.force"], forms.BooleanField)
    assert isinstance(fields["params.mode"], forms.TypedChoiceField)
    assert isinstance(fields["params.extra"], forms.JSONField)
    assert not fields["params.name"].required


def test_a_schema_without_properties_takes_json_unless_it_allows_nothing():
    assert list(params_fields({"type": "object"})) == ["params"]
    assert params_fields({"type": "object", "additionalProperties": False}) == {}


def test_the_form_gives_task_create_its_arguments():
    form = _form(**{
        "params.seconds": "4", "params.force": "on", "params.mode": "3", "params.ports": "22, 80",
        "params.extra": '{"a": 1}', "target.nodes": ["corp/a"], "target.hosts": "h1, h2\nh3",
        "control.batches": "1, 10%, 100%", "control.failure_threshold": "5%",
        "control.timeout": "30", "callback_url": " https://example.com/hook ",
    })
    assert form.is_valid(), form.errors
    args = form.arguments()
    assert args["params"] == {"seconds": 4, "force": True, "mode": 3, "ports": [22, 80],
                              "extra": {"a": 1}}
    assert (args["plugin"], args["version"], args["run_as"]) == ("tool", 3, "root")
    assert (args["nodes"], args["hosts"]) == (["corp/a"], ["h1", "h2", "h3"])
    control = args["control"]
    assert (control.batches, control.failure_threshold, control.timeout) == (
        [1, "10%", "100%"], "5%", 30)
    assert args["callback_url"] == "https://example.com/hook"


def test_bad_values_are_refused_at_their_field():
    form = _form(**{"params.seconds": "11", "params.ports": "22, x", "control.timeout": "61",
                    "run_as": "admin"})
    assert not form.is_valid()
    assert set(form.errors) == {"params.seconds", "params.ports", "control.timeout", "run_as"}


def test_a_services_refusal_is_shown_at_the_field_it_names():
    form = _form(**{"params.seconds": "1"})
    assert form.is_valid()
    form.add_service_error(InvalidInput("bad", {
        "control.batches[1]": ["'x' is neither"], "params.extra.a": ["not a string"],
        "target": ["not operable: h1"], "user": ["rate"],
    }))
    assert form.errors["control.batches"] == ["'x' is neither"]
    assert form.errors["params.extra"] == ["not a string"]
    assert form.errors["target.nodes"] == ["not operable: h1"]
    assert form.non_field_errors() == ["rate"]
