"""Test isolation: every pytest process, and every test module in it, talks DDS on its own domain,
on localhost only."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "test") not in sys.path:
    sys.path.insert(0, str(REPO / "test"))

# Domain ids 1..100, from the pid, so concurrent test runs on one machine do not hear each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture()
def ros_node():
    """One rclpy context and node for a test that publishes or subscribes itself."""
    import rclpy
    rclpy.init()
    node = rclpy.create_node("test_peer")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


_module_count = 0


@pytest.fixture(scope="module", autouse=True)
def ros_domain_per_module():
    """Each test module talks DDS on a domain of its own (set before its module fixtures start
    their rclpy contexts or node processes): participants an earlier module killed, which Fast
    DDS remembers until their 20 s lease ends, cannot slow down or reach a later module."""
    global _module_count
    _module_count += 1
    previous = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_DOMAIN_ID"] = str(1 + (os.getpid() + 101 * _module_count) % 200)
    yield
    os.environ["ROS_DOMAIN_ID"] = previous
