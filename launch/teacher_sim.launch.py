"""Record teacher demonstrations in simulation: simulator (or Gazebo topics), teacher, recorder.

    ros2 launch policy_distill_ros teacher_sim.launch.py [teacher:=models/ant_teacher]
        [use_embedded_sim:=true] [record:=true] [params_file:=...] [sim_params_file:=...]
        [teacher_spec:=...] [namespace:=sim1] [use_sim_time:=true]

use_embedded_sim:=true starts sim_node (MuJoCo Ant, realtime, /clock); false expects the topics
from Gazebo + ros_gz_bridge (see config/gazebo_bridge_example.yaml for the bridge and remaps).
record:=false runs the teacher without recorder_node. Every node started is required: one that
exits stops the launch (exit code 0 when it finished cleanly, e.g. sim_node after num_episodes;
1 when it failed; no respawn: policy_distill_ros/launch_support.py). Params files key their
blocks `/**/<node>`, so they apply under any namespace. Needs launch + launch_ros (a ROS
install, or the wheels `make venv` adds from ../shared/ros2-tools); without them,
`policy-distill record` starts the same executables with the same params files (lockstep, a
fixed number of episodes).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from policy_distill_ros.launch_support import required

PACKAGE = "policy_distill_ros"
PARAMS_FILE = "teacher.yaml"
SIM_PARAMS_FILE = "sim.yaml"
TEACHER_SPEC = "specs/ant_teacher.yaml"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    teacher = LaunchConfiguration("teacher")
    teacher_spec = LaunchConfiguration("teacher_spec")
    params_file = LaunchConfiguration("params_file")
    sim_params_file = LaunchConfiguration("sim_params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")

    arguments = [
        DeclareLaunchArgument(
            "teacher", default_value=PathJoinSubstitution([share, "models", "ant_teacher"]),
            description="teacher directory (model.safetensors + teacher.json)"),
        DeclareLaunchArgument(
            "teacher_spec",
            default_value=PathJoinSubstitution([share, "config", TEACHER_SPEC]),
            description="the teacher's policy spec (checked against the one stored with it; "
                        "recorded with the data)"),
        DeclareLaunchArgument("use_embedded_sim", default_value="true",
                              description="true: start sim_node; false: Gazebo provides the "
                                          "topics"),
        DeclareLaunchArgument("record", default_value="true",
                              description="start recorder_node (rosbag2 MCAP)"),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", PARAMS_FILE]),
            description="teacher_node, recorder_node and timing_monitor_node parameters"),
        DeclareLaunchArgument(
            "sim_params_file",
            default_value=PathJoinSubstitution([share, "config", SIM_PARAMS_FILE]),
            description="sim_node parameters (use_embedded_sim:=true)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace for every node and its relative topics"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="follow /clock (sim_node and Gazebo publish it)"),
    ]
    sim_time = {"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}
    spec = ParameterValue(teacher_spec, value_type=str)
    sim = Node(package=PACKAGE, executable="sim_node", name="sim_node", namespace=namespace,
               parameters=[sim_params_file], output="screen", emulate_tty=True,
               on_exit=required("sim_node"),
               condition=IfCondition(LaunchConfiguration("use_embedded_sim")))
    teacher_node = Node(package=PACKAGE, executable="teacher_node", name="teacher_node",
                        namespace=namespace, output="screen", emulate_tty=True,
                        on_exit=required("teacher_node"),
                        parameters=[params_file, sim_time, {
                            "teacher_path": ParameterValue(teacher, value_type=str),
                            "spec_path": spec}])
    recorder = Node(package=PACKAGE, executable="recorder_node", name="recorder_node",
                    namespace=namespace, output="screen", emulate_tty=True,
                    on_exit=required("recorder_node"),
                    condition=IfCondition(LaunchConfiguration("record")),
                    parameters=[params_file, sim_time, {
                        "teacher_path": ParameterValue(teacher, value_type=str),
                        "teacher_spec_path": spec}])
    monitor = Node(package=PACKAGE, executable="timing_monitor_node",
                   name="timing_monitor_node", namespace=namespace, output="screen",
                   emulate_tty=True, on_exit=required("timing_monitor_node"),
                   parameters=[params_file, sim_time, {"spec_path": spec}])
    return LaunchDescription(arguments + [sim, teacher_node, recorder, monitor])
