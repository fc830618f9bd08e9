"""The console's schedule form: what a browser sends, as the arguments of schedule_create
(which checks everything again; its refusals are shown at the field they name)."""

from typing import Any
from zoneinfo import ZoneInfo

from django import forms

from ccs.errors import Forbidden, InvalidInput, ServiceError

from .services.schedules import zone_check


class ScheduleForm(forms.Form):
    """A cron expression in a time zone, or a one-off time."""

    cron = forms.CharField(required=False, max_length=100, label="cron",
                           help_text="minute hour day month weekday, e.g. 0 3 * * 1-5")
    timezone = forms.CharField(max_length=64, initial="UTC", label="time zone")
    once_at = forms.DateTimeField(required=False, label="or once at",
                                  widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                  help_text="in the time zone given")
    forbidden = False

    def arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        once_at, zone = data["once_at"], data["timezone"].strip()
        if once_at is not None:  # the browser's wall-clock time, in the zone given
            once_at = once_at.replace(tzinfo=None).replace(tzinfo=_zone(zone))
        return {"cron": data["cron"].strip(), "timezone_name": zone, "once_at": once_at}

    def add_service_error(self, exc: ServiceError) -> None:
        self.forbidden = isinstance(exc, Forbidden)
        for key, messages in (exc.errors or {"": [exc.detail]}).items():
            self.add_error(key if key in self.fields else None, messages or [exc.detail])


def _zone(name: str) -> ZoneInfo:
    try:
        return zone_check(name)
    except InvalidInput:
        return ZoneInfo("UTC")  # the service refuses the zone, naming it
