"""The ROS 2 nodes: short rclpy glue around `core`, `sim`, `recording` and `training`, one
module per executable (setup.py's console scripts)."""
