"""Parameters and shutdown of the package's nodes, over DDS, as `ros2 param` and a launch use them.

Every parameter of every node can be described (DescribeParameters: the ranges serialize; an
int range up to 1e300 used to kill the node); a bad runtime value or a refused model returns
successful=False with the reason and the old value stays; an unknown key in the params file is
one warning line; SIGINT once or twice exits 0 without a traceback or an error line.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters

from node_process import node_process
from policy_models import make_linear_policy
from ros_harness import call_service, spun_node, wait_for_log
from test_student_node import SPEC

pytestmark = [pytest.mark.dds, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def client():
    with spun_node("param_client") as node:
        yield node


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("models") / "student.onnx")
    make_linear_policy(path, SPEC, seed=3)
    return path


def nodes_under_test(model: str, tmp: str):
    return {
        "student_node": ("student_node", {"model_path": model, "rate_hz": 50.0}),
        "timing_monitor_node": ("timing_monitor_node", {"model_path": model}),
        "sensor_stream_node": ("sensor_stream_node", {"model_path": model, "rate_hz": 50.0}),
        "recorder_node": ("recorder_node", {"output_dir": tmp, "topics": ["joint_states"]}),
        "sim_node": ("sim_node", {"real_time_factor": 0.2}),
        "teacher_node": ("teacher_node", {"teacher_path": "models/ant_teacher"}),
        "trainer_node": ("trainer_node", {}),
    }


def describe_all(client, name: str) -> list:
    listed, _ = call_service(client, ListParameters, f"/{name}/list_parameters",
                             ListParameters.Request(), timeout_s=30)
    names = list(listed.result.names)
    assert names, name
    described, _ = call_service(client, DescribeParameters, f"/{name}/describe_parameters",
                                DescribeParameters.Request(names=names), timeout_s=30)
    assert [d.name for d in described.descriptors] == names
    return described.descriptors


def set_param(client, node: str, name: str, value: ParameterValue):
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    answer, _ = call_service(client, SetParameters, f"/{node}/set_parameters", request)
    return answer.results[0]


def get_param(client, node: str, name: str) -> ParameterValue:
    answer, _ = call_service(client, GetParameters, f"/{node}/get_parameters",
                             GetParameters.Request(names=[name]))
    return answer.values[0]


def string_value(text: str) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=text)


@pytest.mark.parametrize("which", ["student_node", "timing_monitor_node", "sensor_stream_node",
                                   "recorder_node", "sim_node", "teacher_node", "trainer_node"])
def test_every_parameter_describes_and_sigint_twice_exits_cleanly(client, model, tmp_path,
                                                                   which):
    module, params = nodes_under_test(model, str(tmp_path))[which]
    with node_process(module, which, params) as proc:
        descriptors = describe_all(client, which)
        for d in descriptors:
            for r in d.integer_range:
                assert -(2 ** 63) <= r.from_value <= r.to_value < 2 ** 63, d
        assert proc.poll() is None, proc.node.read_log()[-2000:]
        time.sleep(0.5)
        before = len(proc.node.read_log())   # (a student without sensors logs its fault)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        log = proc.node.read_log()
    assert code == 0, log[-3000:]
    shutdown = log[before:]
    assert "Traceback" not in log and "[ERROR]" not in shutdown and "invalid" not in shutdown, \
        log[-3000:]


def test_bad_values_are_refused_and_the_old_value_kept(client, model, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(512))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(model, "rb").read()[:300])
    with node_process("student_node", "student_node", {"model_path": model, "rate_hz": 50.0,
                                                       "rate_hzz": 3.0}) as student, \
            node_process("timing_monitor_node", "timing_monitor_node",
                         {"model_path": model}) as monitor:
        wait_for_log(student.node, "active: publishing", 30)
        assert "unknown parameter 'rate_hzz' given to node '/student_node'" in \
            student.node.read_log()
        for bad in (str(garbage), str(truncated), str(tmp_path / "missing.onnx")):
            result = set_param(client, "student_node", "model_path", string_value(bad))
            assert not result.successful and "refused" in result.reason or "no such" in \
                result.reason, result.reason
            assert get_param(client, "student_node", "model_path").string_value == model
        result = set_param(client, "student_node", "fallback_mode", string_value("zeroo"))
        assert not result.successful and "hold_default" in result.reason, result.reason
        assert get_param(client, "student_node", "fallback_mode").string_value == "hold_default"
        result = set_param(client, "student_node", "max_input_age_s",
                           ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0))
        assert not result.successful
        result = set_param(client, "timing_monitor_node", "window_size",
                           ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=5))
        assert not result.successful and "read-only" in result.reason.lower(), result.reason
        result = set_param(client, "timing_monitor_node", "latency_warn_ms",
                           ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                          double_value=1e5))
        assert not result.successful and "latency_error_ms" in result.reason, result.reason
        # a good model is swapped in and reads back
        other = str(tmp_path / "other.onnx")
        make_linear_policy(other, SPEC, seed=4)
        result = set_param(client, "student_node", "model_path", string_value(other))
        assert result.successful, result.reason
        assert get_param(client, "student_node", "model_path").string_value == other
        assert student.poll() is None and monitor.poll() is None


def test_a_monitor_given_a_bad_model_says_so_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(300))
    with node_process("timing_monitor_node", "timing_monitor_node",
                      {"model_path": str(garbage)}) as proc:
        code = proc.wait(timeout=30)
        log = proc.node.read_log()
    assert code == 1, log
    assert "Traceback" not in log and log.count("[ERROR]") == 1, log
    assert "cannot start" in log and "garbage.onnx" in log, log


# A value of the wrong type, as a user types it: `rate_hz:=500` is an INTEGER to ROS, the node
# declared a DOUBLE; or text where a number is declared.
WRONG_TYPES = {
    "student_node": ("rate_hz", 500),
    "timing_monitor_node": ("expected_rate_hz", 500),
    "sensor_stream_node": ("rate_hz", 500),
    "recorder_node": ("flush_period_s", 1),
    "sim_node": ("seed", "abc"),
    "teacher_node": ("beta", 1),
    "trainer_node": ("epochs", "ten"),
}


@pytest.mark.parametrize("which", sorted(WRONG_TYPES))
def test_a_wrongly_typed_parameter_is_one_line_naming_it(model, tmp_path, which):
    module, params = nodes_under_test(model, str(tmp_path))[which]
    name, value = WRONG_TYPES[which]
    with node_process(module, which, {**params, name: value}) as proc:
        code = proc.wait(timeout=60)
        log = proc.node.read_log()
    assert code == 1, log
    assert "Traceback" not in log and log.count("[ERROR]") == 1, log
    error = next(line for line in log.splitlines() if "[ERROR]" in line)
    assert "cannot start" in error and f"'{name}'" in error, log
