"""Start `reflex run` as a ROS 2 node.

    ros2 launch launch/reflex.launch.py config:=/etc/reflex/mobile_base.toml \
        params_file:=/etc/reflex/mobile_base.yaml namespace:=/robot1 use_sim_time:=false

Needs a `reflex` built with `--features ros2` (r2r) on a machine with ROS 2 sourced; see
launch/README.md. Parameters are dotted Reflex config keys (launch/params/*.yaml).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    config = LaunchConfiguration("config")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value="/etc/reflex/mobile_base.toml",
                description="Reflex TOML config (launch/mobile_base.toml or launch/arm.toml)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value="/etc/reflex/mobile_base.yaml",
                description="ROS parameters: dotted Reflex config keys (launch/params/)",
            ),
            DeclareLaunchArgument("namespace", default_value=""),
            DeclareLaunchArgument("use_sim_time", default_value="false"),
            # No ament package: `reflex` is found on PATH (/usr/local/bin), as launch_ros does
            # when `package` is omitted.
            Node(
                executable="reflex",
                name="reflex",
                namespace=namespace,
                arguments=["run", "--io", "ros2", "--config", config],
                parameters=[params_file, {"use_sim_time": use_sim_time}],
                remappings=[
                    ("/scan", "/scan"),
                    ("/cmd_vel", "/cmd_vel"),
                ],
                output="screen",
            ),
        ]
    )
