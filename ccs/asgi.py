"""ASGI entry point: the API, the console and the event streams (each open stream is a
coroutine, not a thread). Served by uvicorn workers under gunicorn (see the Procfile)."""

import os
import warnings

from django.core.asgi import get_asgi_application
from django.urls import get_resolver

from ccs.env import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccs.settings")
settings_or_exit()
# WhiteNoise serves static files with synchronous iterators, which Django reads in one go (they
# are small) and warns about on every file. The event streams are asynchronous (their tests
# would hang otherwise).
warnings.filterwarnings("ignore", "StreamingHttpResponse must consume synchronous iterators")
application = get_asgi_application()
# Every view, serializer and the schema generator (about 700 modules, 0.4 s of CPU) imported
# now, as a worker starts, not inside the first request that worker happens to serve (under
# load that request took seconds: a task created in 4.5 s instead of 0.2).
get_resolver().url_patterns  # noqa: B018 - reading it imports the URLconf
