"""One module per executable. Nodes wire topics, parameters and timers to the ROS-free core."""

from __future__ import annotations


def spin_node(node_cls, args=None) -> None:
    """Init rclpy, spin one node until Ctrl-C, clean up."""
    import rclpy

    rclpy.init(args=args)
    node = node_cls()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
