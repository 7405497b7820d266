"""ROS-free, torch-free logic the robot runs (specs, observation assembly, ONNX Runtime policy,
timing, deadline enforcement): importable and testable without DDS; type-checked by mypy."""
