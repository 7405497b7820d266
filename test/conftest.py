"""Test isolation: every pytest process talks DDS on its own domain, on localhost only."""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "test") not in sys.path:
    sys.path.insert(0, str(REPO / "test"))

# Domain ids 1..100, from the pid, so concurrent test runs on one machine do not hear each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture()
def ros_node():
    """One rclpy context and node for a test that publishes or subscribes itself."""
    import rclpy
    rclpy.init()
    node = rclpy.create_node("test_peer")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()
