"""Offline distillation with torch (datasets from bags, teachers, students, losses, DAgger,
export to ONNX, evaluation): a workstation library, never imported on the robot path."""
