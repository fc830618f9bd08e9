"""CCS control plane. The Celery app (ccs.celery) is loaded by the tasks app when Django starts,
so that importing this package (the `ccs` command line, for one) needs no settings."""
