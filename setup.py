"""ament_python package: console scripts go to lib/policy_distill_ros so `ros2 run` finds them."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "policy_distill_ros"

NODES = {
    "student_node": "student_node",
    "timing_monitor_node": "timing_monitor_node",
    "teacher_node": "teacher_node",
    "sim_node": "sim_node",
    "recorder_node": "recorder_node",
    "trainer_node": "trainer_node",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/specs", glob("config/specs/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.onnx") + glob("models/*.yaml")
         + glob("models/*.json") + glob("models/*.png")),
        # teacher directories (teacher_io format: model.safetensors + teacher.json)
        *[(f"share/{PACKAGE}/models/{d.split('/')[-2]}", glob(f"{d}*.*"))
          for d in glob("models/*/")],
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="policy_distill_ros maintainers",
    maintainer_email="maintainers@policy-distill-ros.dev",
    description="Teacher-student policy distillation and real-time deployment for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"{exe}={PACKAGE}.nodes.{module}:main" for exe, module in NODES.items()
        ] + [f"policy-distill={PACKAGE}.cli:main"],
    },
)
