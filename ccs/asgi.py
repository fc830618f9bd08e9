"""ASGI entry point: the API, the console and the event streams (each open stream is a
coroutine, not a thread). Served by uvicorn workers under gunicorn (see the Procfile)."""

import os

from django.core.asgi import get_asgi_application

from ccs.env import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccs.settings")
settings_or_exit()
application = get_asgi_application()
