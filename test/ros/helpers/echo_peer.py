"""A separate process for the interface round-trip test: echoes every hybridvla message type and serves
the hybridvla services.

For each type T it subscribes to /hvtest/in/T and republishes what it got on /hvtest/out/T.
/hvtest/set_instruction refuses an empty instruction, otherwise answers "instruction set: <text>".
/hvtest/episode_control answers with the command number as the episode index.
"""
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

import hybridvla_msgs.msg as msgs
from hybridvla_msgs.srv import EpisodeControl, SetInstruction

TYPES = ["ArmTarget", "ArmState", "PolicyAction", "GuardEvent", "EpisodeEvent"]
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class EchoPeer(Node):
    def __init__(self):
        super().__init__("hvtest_echo_peer")
        self._keep = []
        for name in TYPES:
            cls = getattr(msgs, name)
            pub = self.create_publisher(cls, f"/hvtest/out/{name}", QOS)
            self._keep.append(self.create_subscription(cls, f"/hvtest/in/{name}", pub.publish, QOS))
        self.create_service(SetInstruction, "/hvtest/set_instruction", self.set_instruction)
        self.create_service(EpisodeControl, "/hvtest/episode_control", self.episode_control)
        print("echo peer ready", flush=True)

    def set_instruction(self, request, response):
        response.success = bool(request.instruction.strip())
        response.message = f"instruction set: {request.instruction}" if response.success else "empty instruction"
        return response

    def episode_control(self, request, response):
        response.success = True
        response.episode_index = request.command
        response.message = request.instruction
        return response


def main():
    rclpy.init()
    node = EchoPeer()
    try:
        # Short waits, as hybridvla_ros.common.run_node: a SIGTERM does not always wake a wait set that is
        # already sleeping (rclpy.spin here hung the fixture's teardown about once in 20 runs).
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
