"""Run a distilled student policy on the robot: student node + timing monitor.

    ros2 launch policy_distill_ros student.launch.py model:=/path/to/student.onnx
        [params_file:=...] [namespace:=robot1] [use_sim_time:=true]

Both nodes are required: if either exits, the launch stops both (exit code 1 when it failed, no
respawn; see policy_distill_ros/launch_support.py). The params file's blocks are keyed
`/**/<node>`, so they apply under any namespace. Needs launch + launch_ros (a ROS install, or the
wheels `make venv` adds from ../shared/ros2-tools); without them, `policy-distill deploy` starts
the same two executables with the same params file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from policy_distill_ros.launch_support import required

PACKAGE = "policy_distill_ros"


def generate_launch_description() -> LaunchDescription:
    model = LaunchConfiguration("model")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")

    arguments = [
        DeclareLaunchArgument("model", description="path of the student .onnx policy file"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config",
                                                "student.yaml"]),
            description="ROS params file with /**/student_node and /**/timing_monitor_node "
                        "blocks"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace for both nodes and their relative topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="follow /clock (simulation)"),
    ]
    # Typed explicitly: a path like "1e3" or "true" must stay a string, the flag must be a bool.
    overrides = {"model_path": ParameterValue(model, value_type=str),
                 "use_sim_time": ParameterValue(use_sim_time, value_type=bool)}
    student = Node(package=PACKAGE, executable="student_node", name="student_node",
                   namespace=namespace, parameters=[params_file, overrides], output="screen",
                   emulate_tty=True, on_exit=required("student_node"))
    monitor = Node(package=PACKAGE, executable="timing_monitor_node", name="timing_monitor_node",
                   namespace=namespace, parameters=[params_file, overrides], output="screen",
                   emulate_tty=True, on_exit=required("timing_monitor_node"))
    return LaunchDescription(arguments + [student, monitor])
