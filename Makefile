# Benchmarks: Skipjack side by side with pgqueuer, Procrastinate and Celery.
# See bench/README.md. `python3 dev.py` creates .venv on first use.
PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick

bench:
	$(PYTHON) bench/run.py

bench-quick:
	$(PYTHON) bench/run.py --quick
