"""WSGI entry point."""

import os

from django.core.wsgi import get_wsgi_application

from ccs.env import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccs.settings")
settings_or_exit()
application = get_wsgi_application()
