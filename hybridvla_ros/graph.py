"""What a node sees of the live ROS graph, in hybridvla_core.robots.preflight's terms (Endpoint, action servers).
The bridges' ~/enable and `hybridvla preflight` both read the graph through these functions."""
from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from hybridvla_core.robots.preflight import Endpoint


def endpoint(node_name: str, type_name: str, qos: QoSProfile) -> Endpoint:
    return Endpoint(node_name, type_name, qos.reliability == ReliabilityPolicy.RELIABLE,
                    qos.durability == DurabilityPolicy.TRANSIENT_LOCAL)


def _endpoints(infos) -> list[Endpoint]:
    out = []
    for info in infos:
        ns = info.node_namespace.rstrip("/")
        out.append(endpoint(f"{ns}/{info.node_name}" if info.node_name else "", info.topic_type, info.qos_profile))
    return out


def publishers(node: Node, topic: str, exclude_self: bool = False) -> list[Endpoint]:
    """Every publisher of `topic` (resolved like the node resolves it); exclude_self leaves out `node`'s own."""
    found = _endpoints(node.get_publishers_info_by_topic(node.resolve_topic_name(topic)))
    me = node.get_fully_qualified_name()
    return [e for e in found if not (exclude_self and e.node == me)]


def subscribers(node: Node, topic: str, exclude_self: bool = False) -> list[Endpoint]:
    found = _endpoints(node.get_subscriptions_info_by_topic(node.resolve_topic_name(topic)))
    me = node.get_fully_qualified_name()
    return [e for e in found if not (exclude_self and e.node == me)]


def action_servers(node: Node) -> dict[str, list[str]]:
    """Every action server in the graph: name -> types (e.g. {"/franka_gripper/grasp": ["franka_msgs/action/Grasp"]})."""
    from rclpy.action.graph import get_action_server_names_and_types_by_node

    servers: dict[str, list[str]] = {}
    for name, namespace in node.get_node_names_and_namespaces():
        try:
            found = get_action_server_names_and_types_by_node(node, name, namespace)
        except Exception:  # noqa: BLE001 - a node that left the graph meanwhile
            continue
        for action, types in found:
            servers.setdefault(action, []).extend(types)
    return servers
