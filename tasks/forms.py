"""Forms of the console. They turn what a browser sends into the arguments of the services
(the launch form's parameter fields are generated from the plugin version's JSON Schema); the
services check everything again, and their refusals are shown at the field they name."""

import json
import re
from typing import Any

from django import forms

from ccs.errors import ServiceError
from plugins.models import PluginVersion

from .control import count_or_percent
from .models import Task
from .services import ControlData
from .services.create import launch_body
from .states import OUTCOME_FAILED, SubTaskStatus, TaskStatus

SCALARS = {"integer": forms.IntegerField, "number": forms.FloatField, "string": forms.CharField}
NAMES = re.compile(r"[\s,]+")


class ListField(forms.CharField):
    """A comma-separated list of schema scalars of one type."""

    def __init__(self, *, item: forms.Field, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item = item

    def to_python(self, value: Any) -> list | None:
        text = super().to_python(value)
        if not text:
            return None
        return [self.item.clean(part.strip()) for part in text.split(",")]


class StringsField(forms.Field):
    """Several values of one name (the target picker's checked nodes)."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[str]:
        return [str(v) for v in value or [] if str(v).strip()]


def schema_field(name: str, prop: dict, required: bool) -> forms.Field:
    """The form field of one top-level parameter of a JSON Schema."""
    common = {"required": required, "label": prop.get("title") or name,
              "help_text": prop.get("description", ""), "initial": prop.get("default")}
    kind = prop.get("type")
    if isinstance(prop.get("enum"), list):
        choices = [(json.dumps(v), str(v)) for v in prop["enum"]]
        return forms.TypedChoiceField(choices=[("", "—"), *choices], coerce=json.loads,
                                      empty_value=None, **common)
    if kind == "boolean":
        return forms.BooleanField(**{**common, "required": False})
    if kind in ("integer", "number"):
        return SCALARS[kind](min_value=prop.get("minimum"), max_value=prop.get("maximum"),
                             **common)
    if kind == "string":
        return forms.CharField(min_length=prop.get("minLength"), max_length=prop.get("maxLength"),
                               strip=False, **common)
    items = prop.get("items") if isinstance(prop.get("items"), dict) else {}
    if kind == "array" and items.get("type") in SCALARS:
        item = SCALARS[items["type"]]()
        help_text = " ".join(filter(None, [common.pop("help_text"), "(comma-separated)"]))
        return ListField(item=item, help_text=help_text, **common)
    return forms.JSONField(help_text=common.pop("help_text") or "JSON", **common)


def params_fields(schema: dict) -> dict[str, forms.Field]:
    """Fields named `params.<name>` for the schema's properties; a schema without properties
    that allows any gets one JSON field, `params`."""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    fields = {f"params.{name}": schema_field(name, prop if isinstance(prop, dict) else {},
                                             name in required)
              for name, prop in properties.items()}
    if not fields and schema.get("additionalProperties", True) is not False:
        fields["params"] = forms.JSONField(required=False, initial={}, help_text="JSON object")
    return fields


class LaunchForm(forms.Form):
    """A task of one approved plugin version: its parameters, targets, account and control."""

    def __init__(self, version: PluginVersion, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = version
        self.fields.update(params_fields(version.params_schema or {}))
        self.fields.update({
            "target.nodes": StringsField(required=False, label="nodes"),
            "target.hosts": forms.CharField(
                required=False, label="hosts", widget=forms.Textarea(attrs={"rows": 2}),
                help_text="host names, separated by spaces, commas or lines"),
            "run_as": forms.ChoiceField(choices=[(a, a) for a in version.run_as], label="run as"),
            "control.batches": forms.CharField(
                required=False, max_length=200, label="batches",
                help_text="e.g. 1, 10%, 100%: pauses after each batch but the last"),
            "control.concurrency": forms.IntegerField(min_value=1, required=False,
                                                      label="concurrency"),
            "control.failure_threshold": forms.CharField(
                required=False, max_length=16, label="failure threshold",
                help_text="failed hosts (a count or a percentage) that pause the task"),
            "control.timeout": forms.IntegerField(
                min_value=1, max_value=version.timeout, required=False, label="timeout (s)",
                help_text=f"per host; at most {version.timeout} s"),
            "control.priority": forms.ChoiceField(choices=Task.Priority.choices,
                                                  initial=Task.Priority.NORMAL, label="priority"),
            "control.auto_resume": forms.IntegerField(
                min_value=1, required=False, label="auto-resume (s)",
                help_text="continue after a pause point when nothing failed"),
            "callback_url": forms.CharField(required=False, max_length=2000, label="callback URL"),
            "job.name": forms.SlugField(required=False, max_length=100, label="job name",
                                        help_text="letters, digits, - and _"),
            "job.description": forms.CharField(required=False, max_length=500,
                                               label="description"),
            "job.newest": forms.BooleanField(
                required=False, label="newest version",
                help_text="run the newest approved version at each run, not this one"),
        })

    @staticmethod
    def initial_of(launch: dict, name: str = "", description: str = "") -> dict[str, Any]:
        """The form's initial values for a launch as the API takes it (a saved job's)."""
        control = launch.get("control", {})
        params = {f"params.{key}": ", ".join(map(str, value)) if isinstance(value, list)
                  else value for key, value in launch["params"].items()}
        return {
            **params, "params": launch["params"], "run_as": launch["run_as"],
            "target.nodes": launch["target"]["nodes"],
            "target.hosts": " ".join(launch["target"]["hosts"]),
            "control.batches": ", ".join(map(str, control.get("batches", []))),
            "control.concurrency": control.get("concurrency"),
            "control.failure_threshold": control.get("failure_threshold") or "",
            "control.timeout": control.get("timeout"),
            "control.priority": control.get("priority", Task.Priority.NORMAL),
            "control.auto_resume": control.get("auto_resume"),
            "callback_url": launch.get("callback_url", ""),
            "job.name": name, "job.description": description,
            "job.newest": not launch.get("version"),
        }

    def groups(self) -> dict[str, Any]:
        """Bound fields by section, for the template (their names hold dots)."""
        sections: dict[str, Any] = {
            "params": [], "control": [], "nodes": self["target.nodes"],
            "hosts": self["target.hosts"], "run_as": self["run_as"],
            "job": [self["job.name"], self["job.description"], self["job.newest"]],
        }
        for name in self.fields:
            if name.startswith("params"):
                sections["params"].append(self[name])
            elif name.startswith("control.") or name == "callback_url":
                sections["control"].append(self[name])
        return sections

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of tasks.services.task_create."""
        data = self.cleaned_data
        params = data.get("params") if "params" in self.fields else {
            name.removeprefix("params."): value for name, value in data.items()
            if name.startswith("params.") and value not in (None, "")
        }
        batches = [count_or_percent(b.strip()) for b in data["control.batches"].split(",")
                   if b.strip()]
        control = ControlData(
            timeout=data["control.timeout"], priority=data["control.priority"],
            concurrency=data["control.concurrency"], batches=batches,
            failure_threshold=count_or_percent(data["control.failure_threshold"].strip()),
            auto_resume=data["control.auto_resume"],
        )
        return {
            "plugin": self.version.plugin.name, "version": self.version.number,
            "params": params if params is not None else {}, "run_as": data["run_as"],
            "nodes": data["target.nodes"], "hosts": host_names(data["target.hosts"]),
            "control": control, "callback_url": data["callback_url"].strip(),
        }

    def job_arguments(self) -> dict[str, Any]:
        """The name, description and launch of a saved job of this form (jobs.services)."""
        launch = launch_body(**self.arguments())
        if self.cleaned_data["job.newest"]:
            launch["version"] = None
        return {"name": self.cleaned_data["job.name"], "launch": launch,
                "description": self.cleaned_data["job.description"]}

    def add_service_error(self, exc: ServiceError) -> None:
        """Show a service's refusal at the fields it names (`control.batches[1]` at batches,
        `params.a.b` at `params.a`, `target` at the nodes)."""
        for key, messages in (exc.errors or {"": [exc.detail]}).items():
            self.add_error(self._field_of(key), messages or [exc.detail])

    def _field_of(self, key: str) -> str | None:
        name = re.sub(r"\[\d+\]", "", key).removeprefix("launch.")  # a saved job's launch
        if name == "target":
            return "target.nodes"
        if name in ("name", "description"):  # a saved job's
            return f"job.{name}"
        while name and name not in self.fields:
            name = name.rpartition(".")[0]
        return name or None


def host_names(text: str) -> list[str]:
    return [name for name in NAMES.split(text or "") if name]


class TargetForm(forms.Form):
    """The target picker's state, for the count of hosts it expands to."""

    nodes = StringsField(required=False)
    hosts = forms.CharField(required=False)

    def __init__(self, data: Any) -> None:
        super().__init__({"nodes": data.getlist("target.nodes"), "hosts": data.get("target.hosts")})


class HistoryFilters(forms.Form):
    """The task history's filters."""

    creator = forms.CharField(required=False, max_length=150)
    plugin = forms.CharField(required=False, max_length=100)
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *TaskStatus.choices])
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    failures = forms.BooleanField(required=False, label="had failures")
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


class HostFilters(forms.Form):
    """The host table's filters on a task page."""

    status = forms.ChoiceField(required=False, choices=[("", "any state"), *SubTaskStatus.choices])
    datacenter = forms.ChoiceField(required=False)
    group = forms.CharField(required=False, max_length=100, widget=forms.HiddenInput)
    host = forms.CharField(required=False, max_length=253, label="host name")
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, data: Any, datacenters: list[str]) -> None:
        super().__init__(data)
        self.fields["datacenter"].choices = [("", "any datacenter"),
                                             *((d, d) for d in datacenters)]


class RerunForm(forms.Form):
    """Which unsuccessful hosts of a task to run again."""

    statuses = forms.MultipleChoiceField(choices=[(s, s) for s in sorted(OUTCOME_FAILED)])
