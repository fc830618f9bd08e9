# CCS: `make demo` runs the whole path on the embedded default; `make test` runs the suite.
# Both first install what they need from the machine (scripts/system.sh: Debian packages,
# and for the tests PostgreSQL and Redis started if they are down).
PY := .venv/bin/python
STAMP := .venv/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ccs
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
# The event channel is Redis whatever the broker: the broker's own when that is Redis.
TEST_REDIS_URL ?= $(if $(filter redis%,$(TEST_BROKER_URL)),$(TEST_BROKER_URL),redis://127.0.0.1:6379/15)
# A RabbitMQ for the tests that run tasks over it (each in a vhost of its own).
TEST_RABBITMQ_URL ?= amqp://guest:guest@127.0.0.1:5672/
# Two test runs on one machine stay apart with their own database, Redis database and prefix.
TEST_DB_NAME ?= test_ccs
TEST_EVENT_PREFIX ?= ccs-$(TEST_DB_NAME)
# The console's live-update library, vendored (static/vendor/README.md): `make vendor` refreshes it.
HTMX := 2.0.11
HTMX_SSE := 2.2.4

.PHONY: demo up test secrets lint bench clean system-demo system-test vendor

system-demo:
	@bash scripts/system.sh demo

system-test:
	@bash scripts/system.sh test $(TEST_DATABASE_URL) $(TEST_REDIS_URL) $(TEST_RABBITMQ_URL)

$(STAMP): pyproject.toml | system-demo
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

secrets: $(STAMP)
	@$(PY) ccs/keygen.py var

demo: system-demo secrets
	$(PY) manage.py demo

up: system-demo secrets
	$(PY) manage.py demo --up

test: system-test secrets
	DATABASE_URL=$(TEST_DATABASE_URL) CCS_BROKER_URL=$(TEST_BROKER_URL) \
		CCS_REDIS_URL=$(TEST_REDIS_URL) CCS_TEST_RABBITMQ_URL=$(TEST_RABBITMQ_URL) \
		CCS_TEST_DATABASE=$(TEST_DB_NAME) CCS_EVENT_PREFIX=$(TEST_EVENT_PREFIX) \
		CCS_CALLBACK_ALLOW_PRIVATE=1 CCS_CALLBACK_BACKOFF_BASE=1 \
		$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	.venv/bin/ruff check .

bench: secrets
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) bench/fanout.py --hosts 1000

clean:
	rm -rf var/log var/ccs.sqlite3* var/fleet-*.json

vendor:
	rm -rf var/vendor && mkdir -p var/vendor/htmx var/vendor/sse
	cd var/vendor && npm pack --silent htmx.org@$(HTMX) htmx-ext-sse@$(HTMX_SSE)
	tar -xzf var/vendor/htmx.org-$(HTMX).tgz -C var/vendor/htmx
	tar -xzf var/vendor/htmx-ext-sse-$(HTMX_SSE).tgz -C var/vendor/sse
	cp var/vendor/htmx/package/dist/htmx.min.js static/vendor/htmx-$(HTMX).min.js
	cp var/vendor/sse/package/dist/sse.min.js static/vendor/htmx-ext-sse-$(HTMX_SSE).min.js
	cd var/vendor && sha256sum *.tgz
