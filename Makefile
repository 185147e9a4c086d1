# Benchmarks: Skipjack side by side with pgqueuer, Procrastinate and Celery.
# See bench/README.md. dev.py creates .venv with the runtime dependencies
# first, as `python3 dev.py run` does (a no-op once it is there).
PYTHON ?= $(or $(SKIPJACK_VENV),.venv)/bin/python

.PHONY: bench bench-quick venv

bench: venv
	$(PYTHON) bench/run.py

bench-quick: venv
	$(PYTHON) bench/run.py --quick

venv:
	python3 -c 'import dev; dev.ensure_environment(["runtime"])'
