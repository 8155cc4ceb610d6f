# Two commands a fresh machine needs:   make demo   and   make test
# Both create/update the virtual environment themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: venv demo test lint bench clean

$(STAMP): requirements.txt setup.py setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qwen-vla-ros demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	AMENT_PREFIX_PATH=$(abspath $(VENV)) $(PY) -m pytest -ra

bench: $(STAMP)
	$(PY) bench/model.py --preset tiny --json out/bench_model_tiny.json

clean:
	rm -rf $(VENV) out build install log *.egg-info
