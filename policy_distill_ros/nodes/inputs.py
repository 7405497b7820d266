"""What a policy node reads from its inputs besides the observation: the newest header stamp
(the echo's stamp rule, episode resets) and the operator's command.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TwistStamped

from policy_distill_ros.core.contract import header_stamp_s
from policy_distill_ros.core.episode import EpisodeBoundary


def twist_command(msg: TwistStamped) -> np.ndarray:
    """The usual legged-robot velocity command [v_x, v_y, yaw_rate] from a TwistStamped."""
    twist = msg.twist
    return np.array([twist.linear.x, twist.linear.y, twist.angular.z], dtype=np.float64)


class InputStamps:
    """Header stamps of a policy node's inputs: the newest one as its own Time message (the
    stamp rule copies it exactly into the echo) and episode resets from stamps going back."""

    def __init__(self) -> None:
        self.episodes = EpisodeBoundary()
        self.newest = None   # (seconds, builtin_interfaces/Time)

    def on_message(self, topic: str, msg: object) -> str | None:
        """Record `msg`'s stamp; a description when time went backwards (reset), else None."""
        stamp = header_stamp_s(msg)
        if stamp is None:
            return None
        jump = self.episodes.on_stamp(topic, stamp)
        if jump is not None:
            self.newest = None
        if self.newest is None or stamp >= self.newest[0]:
            self.newest = (stamp, msg.header.stamp)
        return jump
