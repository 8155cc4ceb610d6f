# Two commands a fresh machine needs:   make demo   and   make test
# Both create/update the virtual environment themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

# interbotix_xs_msgs and tf2_msgs are not on PyPI: the demos and tests use real classes
# generated from fixture packages with the same field layout (test/fixtures/), built here
# with colcon from the ROS 2 wheels. Robot machines use the real packages instead.
IX_WS := build/fixtures
IX := $(IX_WS)/install
IX_STAMP := $(IX)/.built
PYVER = $(shell $(PY) -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
RUN_ENV = MUJOCO_GL=$${MUJOCO_GL:-egl} AMENT_PREFIX_PATH=$(abspath $(VENV)):$(abspath $(IX)) \
	LD_LIBRARY_PATH=$(abspath $(IX))/lib$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} \
	PYTHONPATH=$(abspath $(IX))/lib/$(PYVER)/site-packages

.PHONY: venv fixtures demo demo-vln test lint bench clean

$(STAMP): requirements.txt setup.py setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

$(IX_STAMP): $(STAMP) $(wildcard test/fixtures/*/*) $(wildcard test/fixtures/*/msg/*)
	rm -rf $(IX_WS) && mkdir -p $(IX_WS)
	cd $(IX_WS) && PATH=$(abspath $(VENV))/bin:$$PATH AMENT_PREFIX_PATH=$(abspath $(VENV)) \
		CMAKE_PREFIX_PATH=$(abspath $(VENV)) $(abspath $(VENV))/bin/colcon build \
		--base-paths $(abspath test/fixtures) --merge-install --event-handlers console_direct- \
		--cmake-args -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF > build.log 2>&1 \
		|| { tail -40 build.log; exit 1; }
	touch $(IX_STAMP)

fixtures: $(IX_STAMP)

demo: $(STAMP) $(IX_STAMP)
	$(RUN_ENV) $(VENV)/bin/qwen-vla-ros demo --out $(DEMO_OUT)

demo-vln: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/qwen-vla-ros demo vln --out out/demo_vln

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) $(IX_STAMP) lint
	$(RUN_ENV) $(PY) -m pytest -ra

bench: $(STAMP)
	$(PY) bench/model.py --preset tiny --json out/bench_model_tiny.json

clean:
	rm -rf $(VENV) out build install log *.egg-info
