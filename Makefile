# PulseGuard: two commands on a fresh machine.
#   make run    install, start embedded PostgreSQL + Redis (unless DATABASE_URL / REDIS_URL
#               are set), migrate, run web + worker + beat + a demo fleet
#   make test   the same bootstrap, then the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install bench shell check clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) scripts/devstack.py run

test: $(STAMP)
	$(PY) scripts/devstack.py test $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) scripts/devstack.py shell $(PY) bench/heartbeat.py $(BENCH_ARGS)

shell: $(STAMP)
	$(PY) scripts/devstack.py shell

check: $(STAMP)
	$(PY) scripts/devstack.py shell $(PY) manage.py check --deploy --fail-level ERROR

clean:
	rm -rf var .pytest_cache staticfiles
