# Two commands on a fresh machine:  `make demo` (main job) and `make test` (test suite).
# Each creates .venv with every dependency; the ROS 2 wheels from PyPI are added when no ROS
# install is sourced (ROS_DISTRO unset), and so are launch, launch_ros, ros2cli & co. from
# $(ROS2_TOOLS) (wheels built from their upstream sources; not on PyPI) when that directory exists.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ROS2_TOOLS ?= ../shared/ros2-tools

ifeq ($(ROS_DISTRO),)
ROS_REQ := -r requirements/ros-wheels.txt
TOOL_WHEELS := $(wildcard $(ROS2_TOOLS)/wheels/*.whl)
ifneq ($(TOOL_WHEELS),)
ROS_REQ += -r requirements/ros-tools.txt
endif
endif

.PHONY: venv test test-all demo bench colcon clean

venv: $(STAMP)

$(STAMP): requirements/*.txt setup.py $(TOOL_WHEELS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements/dev.txt $(ROS_REQ)
	$(if $(TOOL_WHEELS),$(PY) -m pip install --no-deps $(TOOL_WHEELS))
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

test: venv
	$(PY) -m pytest

test-all: venv
	$(PY) -m pytest -m "slow or not slow"

demo: venv
	$(VENV)/bin/policy-distill demo

bench: venv
	$(PY) bench/student_latency.py

colcon: venv
	$(VENV)/bin/colcon build --base-paths . --build-base build/colcon --install-base build/install

clean:
	rm -rf build install log $(VENV)
