# sohoa — the two commands a new user needs:
#   make run    install, start the local stack (with Prometheus and Alertmanager on loopback),
#               drop Vietnamese sample pages, show their progress
#   make test   install, start a throw-away Kafka + PostgreSQL on free ports, run every test, stop them
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOHOA := $(VENV)/bin/sohoa
STAMP := $(VENV)/.sohoa-installed
PYTEST_ARGS ?=

.PHONY: help install system-deps object-store verapdf run demo down status test test-faults bench lint clean

help:
	@echo "make run     — cài đặt, khởi động Kafka + PostgreSQL + các thành phần, chạy thử trang mẫu"
	@echo "make test    — cài đặt và chạy toàn bộ kiểm thử trên Kafka/PostgreSQL thật (tạm thời)"
	@echo "make bench   — đo hiệu năng (bench/), ghi báo cáo vào bench/results/"
	@echo "make down    — dừng hệ thống cục bộ"

system-deps:
	bash infra/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m deliver.csip   # eark-validator in its own venv (it pins lxml 5.1)
	touch $(STAMP)

# The object store (SeaweedFS) built from its Go module once per version, then cached in
# ~/.cache/sohoa/seaweedfs-<version>/ (a no-op when present).
object-store: $(STAMP)
	$(PY) -m infra.objects build

# veraPDF (PDF/A validator of the OCR tests and bench), from Maven Central, cached in ~/.cache/sohoa
verapdf: $(STAMP)
	$(PY) -m infra.verapdf --ensure >/dev/null

install: system-deps $(STAMP) verapdf object-store

run: install
	$(SOHOA) up --monitoring
	$(PY) -m infra.demo
	@echo "Dừng hệ thống: make down"

demo: $(STAMP)
	$(PY) -m infra.demo

status: $(STAMP)
	$(SOHOA) status

down: $(STAMP)
	$(SOHOA) down

test: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

test-faults: install
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
