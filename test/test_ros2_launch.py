"""A real `ros2 launch` of the shipped launch files, from a colcon install, with and without a
namespace.

The package is built with colcon into a temporary workspace; `ros2 launch` runs in an
environment made only by sourcing its `install/setup.bash` (no PYTHONPATH set by hand), in a
process group of its own, as a terminal would start it. A probe node in this process checks:
every node is up under the namespace; each parameter of the params file, read back over
GetParameters, equals the file's value (the blocks are keyed `/**/<node>`, so a namespace keeps
them); the nodes' subscriptions and publishers are under the namespace, the student's hot path
on the student node itself; the student acts on sensors published under the namespace. Then
SIGINT to the process group (Ctrl-C) must end the launch with exit code 0; and a required node
that dies (kill -9, or a missing model) must take the launch down with exit code 1 (no respawn,
launch_support.py).

Skips when `ros2 launch` is unavailable: launch, launch_ros and ros2cli have no PyPI wheel;
`make venv` installs them from ../shared/ros2-tools when that directory exists, and a sourced
ROS 2 install provides them too.
"""
from __future__ import annotations

import array
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from policy_distill_ros.params_file import flat_params, node_params

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "policy_distill_ros"
BIN = Path(sys.executable).parent
ROS2 = shutil.which("ros2", path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
COLCON = shutil.which("colcon", path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
UP_TIMEOUT_S = 90.0       # a loaded 2-core machine: torch + MuJoCo imports, DDS discovery
STOP_TIMEOUT_S = 40.0

pytestmark = pytest.mark.dds


def _missing_tools() -> str | None:
    missing = [m for m in ("launch", "launch_ros", "ros2launch")
               if importlib.util.find_spec(m) is None]
    if missing or ROS2 is None:
        return (f"`ros2 launch` unavailable ({', '.join(missing) or 'no ros2 command'} not "
                f"installed): `make venv` installs launch/launch_ros/ros2cli from "
                f"../shared/ros2-tools/wheels when that directory exists; or source ROS 2")
    if COLCON is None:
        return "colcon not installed (requirements/dev.txt)"
    return None


if _missing_tools():
    pytest.skip(_missing_tools(), allow_module_level=True)


# ---- the workspace and the launch process ------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """colcon build into a temporary workspace; the environment `source install/setup.bash`
    gives (PATH with this venv, nothing hand-set on PYTHONPATH)."""
    root = tmp_path_factory.mktemp("ws")
    out = subprocess.run([COLCON, "--log-base", str(root / "log"), "build", "--base-paths",
                          str(REPO), "--build-base", str(root / "build"), "--install-base",
                          str(root / "install")], cwd=root, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    base["PATH"] = os.pathsep.join([str(BIN), base.get("PATH", "/usr/bin:/bin")])
    base["ROS_LOG_DIR"] = str(root / "ros_log")
    dump = subprocess.run(["bash", "-c", f". '{root}/install/setup.bash' && env -0"], env=base,
                          capture_output=True, timeout=60, check=True).stdout.decode()
    env = dict(item.split("=", 1) for item in dump.split("\0") if "=" in item)
    model = root / "student.onnx"
    from policy_models import make_linear_policy
    make_linear_policy(model, REPO / "config" / "specs" / "ant_student.yaml")
    return {"root": root, "env": env, "model": model}


class Launch:
    """`ros2 launch` in its own process group (a terminal's Ctrl-C reaches the whole group)."""

    def __init__(self, env: dict, log_path: Path, launch_file: str, *args: str) -> None:
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen([ROS2, "launch", PACKAGE, launch_file, *args], env=env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pid(self, executable: str) -> int:
        import psutil
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if any(Path(part).name == executable for part in child.cmdline()[:2]):
                return child.pid
        raise AssertionError(f"no {executable} process under the launch\n{self.log()[-3000:]}")

    def interrupt(self) -> int:
        """SIGINT to the process group, as Ctrl-C; the launch's exit code. `log_at_sigint` keeps
        how much had been logged before, so what shutdown logs can be told apart."""
        self.log_at_sigint = len(self.log())
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        else:   # the launch is gone; end any child it left behind, by its group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def probe():
    """An rclpy node in this process (own executor thread) that looks at the graph."""
    from ros_harness import spun_node
    with spun_node("launch_test_probe") as node:
        yield node


def _full(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}" if namespace else f"/{name}"


def wait_for_nodes(probe, launch: Launch, namespace: str, names: list[str]) -> None:
    want = {(name, namespace or "/") for name in names}
    deadline = time.monotonic() + UP_TIMEOUT_S
    seen: set = set()
    while time.monotonic() < deadline:
        assert launch.proc.poll() is None, \
            f"ros2 launch exited with {launch.proc.returncode}\n{launch.log()[-4000:]}"
        seen = set(probe.get_node_names_and_namespaces())
        if want <= seen:
            return
        time.sleep(0.2)
    raise AssertionError(f"nodes {sorted(want - seen)} not up after {UP_TIMEOUT_S:g} s "
                         f"(seen {sorted(seen)})\n{launch.log()[-4000:]}")


def read_parameters(probe, node_fqn: str, names: list[str]) -> dict:
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    from ros_harness import call_service
    response, _ = call_service(probe, GetParameters, f"{node_fqn}/get_parameters",
                               GetParameters.Request(names=names), timeout_s=60.0)
    values = [parameter_value_to_python(value) for value in response.values]
    return {name: list(v) if isinstance(v, (array.array, tuple, list)) else v
            for name, v in zip(names, values, strict=True)}


def assert_params_read_back(probe, params_file: Path, node: str, namespace: str,
                            set_by_launch: set) -> None:
    in_file = flat_params(node_params(params_file, node, namespace or "/"))
    expected = {k: v for k, v in in_file.items() if k not in set_by_launch}
    assert expected, f"{params_file.name} has nothing for {node}"
    got = read_parameters(probe, _full(namespace, node), sorted(expected))
    differing = {k: (expected[k], got[k]) for k in expected if got[k] != expected[k]}
    assert not differing, f"{_full(namespace, node)}: (file, node) differ: {differing}"


def endpoints(probe, node: str, namespace: str) -> tuple[set, set]:
    ns = namespace or "/"
    subs = {name for name, _ in probe.get_subscriber_names_and_types_by_node(node, ns)}
    pubs = {name for name, _ in probe.get_publisher_names_and_types_by_node(node, ns)}
    return subs, pubs


def wait_for_endpoints(probe, node: str, namespace: str, subs: set, pubs: set) -> None:
    from ros_harness import wait_until
    got: list = [set(), set()]

    def present() -> bool:
        got[:] = endpoints(probe, node, namespace)
        return subs <= got[0] and pubs <= got[1]
    try:
        wait_until(present, 30.0, f"endpoints of {_full(namespace, node)}", period_s=0.2)
    except AssertionError:
        raise AssertionError(f"{_full(namespace, node)}: missing subscriptions "
                             f"{sorted(subs - got[0])}, publishers {sorted(pubs - got[1])}; "
                             f"has {sorted(got[0])} / {sorted(got[1])}") from None


# ---- the cases ---------------------------------------------------------------------------------
STUDENT_CHANGES = {"student_node": {"trigger": "on_message", "max_input_age_s": 0.25,
                                    "fallback_mode": "zero"},
                   "timing_monitor_node": {"window_size": 500, "latency_warn_ms": 6.5}}
TEACHER_CHANGES = {"teacher_node": {"max_input_age_s": 0.75},
                   "timing_monitor_node": {"latency_warn_ms": 7.5}}
TEACHER_TOPICS = ["joint_states", "imu", "privileged/odometry", "privileged/contact_forces",
                  "privileged/dynamics", "policy_command", "policy_action", "episode"]


def params_file_with(source: Path, changes: dict, target: Path, **extra) -> Path:
    """A copy of a shipped params file (its `/**/<node>` keys kept) with non-default values,
    so a node running its defaults cannot pass."""
    data = yaml.safe_load(source.read_text())
    for key, block in data.items():
        node = key.rsplit("/", 1)[-1]
        block["ros__parameters"].update(changes.get(node, {}))
        block["ros__parameters"].update(extra.get(node, {}))
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


CASES = [("student.launch.py", ""), ("student.launch.py", "robot1"),
         ("teacher_sim.launch.py", ""), ("teacher_sim.launch.py", "sim1")]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1] or 'root'}")
def launched(request, workspace, probe):
    launch_file, relative_ns = request.param
    root = workspace["root"]
    tag = f"{launch_file.split('.')[0]}_{relative_ns or 'root'}"
    args = [f"namespace:={relative_ns}"] if relative_ns else []   # as users write it
    namespace = f"/{relative_ns}" if relative_ns else ""           # as the graph reports it
    if launch_file == "student.launch.py":
        params = params_file_with(REPO / "config" / "student.yaml", STUDENT_CHANGES,
                                  root / f"{tag}.yaml")
        args += [f"model:={workspace['model']}", f"params_file:={params}"]
        nodes = ["student_node", "timing_monitor_node"]
    else:
        params = params_file_with(REPO / "config" / "teacher.yaml", TEACHER_CHANGES,
                                  root / f"{tag}.yaml",
                                  recorder_node={"output_dir": str(root / f"bags_{tag}")})
        args += [f"params_file:={params}"]
        nodes = ["sim_node", "teacher_node", "recorder_node", "timing_monitor_node"]
    launch = Launch(workspace["env"], root / f"{tag}.log", launch_file, *args)
    try:
        yield {"launch": launch, "namespace": namespace, "params": params, "nodes": nodes,
               "file": launch_file, "stopped": {}}
    finally:
        launch.close()


def test_every_node_up(launched, probe) -> None:
    wait_for_nodes(probe, launched["launch"], launched["namespace"], launched["nodes"])


# Parameters the launch file sets itself (from its arguments), over the params file's value.
SET_BY_LAUNCH = {"student_node": {"model_path", "use_sim_time"},
                 "timing_monitor_node": {"model_path", "use_sim_time", "spec_path"},
                 "teacher_node": {"teacher_path", "spec_path", "use_sim_time"},
                 "recorder_node": {"teacher_path", "teacher_spec_path", "use_sim_time"},
                 "sim_node": set()}


def test_params_read_back_equal_the_params_file(launched, probe) -> None:
    ns = launched["namespace"]
    wait_for_nodes(probe, launched["launch"], ns, launched["nodes"])
    for node in launched["nodes"]:
        source = REPO / "config" / "sim.yaml" if node == "sim_node" else launched["params"]
        assert_params_read_back(probe, source, node, ns, SET_BY_LAUNCH[node])


def test_topics_under_the_namespace(launched, probe) -> None:
    ns, launch = launched["namespace"], launched["launch"]
    wait_for_nodes(probe, launch, ns, launched["nodes"])

    def full(name: str) -> str:
        return _full(ns, name)

    if launched["file"] == "student.launch.py":
        # the hot path on the node users address (`ros2 node info <ns>/student_node`)
        wait_for_endpoints(probe, "student_node", ns, {full("joint_states"), full("imu")},
                           {full("policy_command"), full("policy_action")})
        # the monitor's echo subscription and its fallback publisher, on the monitor itself
        wait_for_endpoints(probe, "timing_monitor_node", ns, {full("policy_action")},
                           {full("policy_command")})
        _student_acts_on_namespaced_sensors(probe, ns)
    else:
        wait_for_endpoints(probe, "sim_node", ns, {full("policy_command")},
                           {full("joint_states"), full("imu"), full("privileged/odometry")})
        wait_for_endpoints(probe, "teacher_node", ns, {full("joint_states"), full("imu")},
                           {full("policy_command"), full("policy_action")})
        # every topic with a publisher (teacher_label has none in drive mode) is recorded
        wait_for_endpoints(probe, "recorder_node", ns, {full(t) for t in TEACHER_TOPICS}, set())


def _student_acts_on_namespaced_sensors(probe, namespace: str) -> None:
    """Sensors under the namespace -> policy (not fallback) actions under the namespace."""
    from sensor_msgs.msg import Imu, JointState

    from ros_harness import BEST_EFFORT, RECORD, wait_until
    joints = ["hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4"]
    echoes: list = []
    ns = namespace or "/"
    sub = probe.create_subscription(JointState, _full(namespace, "policy_action"),
                                     echoes.append, RECORD)
    js_pub = probe.create_publisher(JointState, _full(namespace, "joint_states"), BEST_EFFORT)
    imu_pub = probe.create_publisher(Imu, _full(namespace, "imu"), BEST_EFFORT)

    def publish() -> None:
        stamp = probe.get_clock().now().to_msg()
        imu = Imu()
        imu.header.stamp, imu.orientation.w = stamp, 1.0
        imu_pub.publish(imu)
        msg = JointState(name=list(reversed(joints)), position=[0.1] * 8, velocity=[0.0] * 8)
        msg.header.stamp = stamp
        js_pub.publish(msg)
    timer = probe.create_timer(0.02, publish)
    try:
        wait_until(lambda: any(e.header.frame_id != "fallback" for e in list(echoes)), 30.0,
                   f"a policy action on {_full(namespace, 'policy_action')} ({ns})")
    finally:
        probe.destroy_timer(timer)
        probe.destroy_subscription(sub)
        probe.destroy_publisher(js_pub)
        probe.destroy_publisher(imu_pub)


def test_sigint_to_the_process_group_exits_0(launched, probe) -> None:
    launch = launched["launch"]
    wait_for_nodes(probe, launch, launched["namespace"], launched["nodes"])
    started = time.monotonic()
    code = launch.interrupt()
    launched["stopped"] = {"code": code, "s": time.monotonic() - started}
    assert code == 0, f"ros2 launch exited {code} after SIGINT\n{launch.log()[-4000:]}"


def test_sigint_leaves_no_node_traceback(launched) -> None:
    if not launched["stopped"]:
        pytest.skip("the launch was not stopped by the SIGINT test")
    log = launched["launch"].log()
    assert "Traceback" not in log and "process has died" not in log, log[-4000:]
    shutdown_log = log[launched["launch"].log_at_sigint:]
    assert "[ERROR]" not in shutdown_log, shutdown_log[-4000:]


def test_a_dying_required_node_stops_the_launch(workspace, probe) -> None:
    """kill -9 the timing monitor: without it the student would run unsupervised."""
    import psutil
    root, ns = workspace["root"], "/robot2"
    params = params_file_with(REPO / "config" / "student.yaml", {}, root / "dying.yaml")
    launch = Launch(workspace["env"], root / "dying.log", "student.launch.py",
                    f"model:={workspace['model']}", f"params_file:={params}",
                    "namespace:=robot2")
    try:
        wait_for_nodes(probe, launch, ns, ["student_node", "timing_monitor_node"])
        student = psutil.Process(launch.child_pid("student_node"))
        os.kill(launch.child_pid("timing_monitor_node"), signal.SIGKILL)
        code = launch.proc.wait(timeout=STOP_TIMEOUT_S)
        log = launch.log()
        assert code == 1, f"ros2 launch exited {code}\n{log[-4000:]}"
        assert "required node timing_monitor_node exited with code -9" in log, log[-4000:]
        try:
            student.wait(timeout=5)
        except psutil.TimeoutExpired:
            raise AssertionError(f"student_node still running after the launch ended\n"
                                 f"{log[-3000:]}") from None
    finally:
        launch.close()


def test_a_bad_model_path_stops_the_launch(workspace) -> None:
    """A model path that does not exist: the launch must not keep running half-configured."""
    root = workspace["root"]
    launch = Launch(workspace["env"], root / "bad_model.log", "student.launch.py",
                    f"model:={root / 'missing.onnx'}", "namespace:=robot3")
    try:
        code = launch.proc.wait(timeout=UP_TIMEOUT_S)
        log = launch.log()
        assert code == 1, f"ros2 launch exited {code}\n{log[-4000:]}"
        assert re.search(r"required node \w+ exited with code 1", log), log[-4000:]
        assert "missing.onnx" in log, log[-4000:]   # the reason is in the log
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the launch still runs {UP_TIMEOUT_S:g} s after starting with a "
                             f"missing model\n{launch.log()[-4000:]}") from None
    finally:
        launch.close()
