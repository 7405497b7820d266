"""policy_distill_ros: teacher-student policy distillation and real-time deployment for ROS 2.

Layers (test/test_layers.py): `core` (no rclpy, no torch), `nodes` (rclpy glue), `sim`,
`recording`, `training` and `commands` (the `policy-distill` command).
"""
