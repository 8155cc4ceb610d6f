"""Publishing one node's /diagnostics status (diagnostic_msgs), the same way for every node."""

from __future__ import annotations

from typing import Any


def publish_diagnostics(node, pub, name: str, hardware_id: str, level: str, message: str,
                        values: dict[str, Any]) -> None:
    """One diagnostic_msgs/DiagnosticStatus; ``level`` is OK, WARN or ERROR; a value of None
    reads "n/a", a float has one decimal, anything else is ``str()`` (format it first for
    another precision)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    def text(v: Any) -> str:
        return "n/a" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    st = DiagnosticStatus(name=name, hardware_id=hardware_id, message=message,
                          level=getattr(DiagnosticStatus, level),
                          values=[KeyValue(key=k, value=text(v)) for k, v in values.items()])
    arr = DiagnosticArray(status=[st])
    arr.header.stamp = node.get_clock().now().to_msg()
    pub.publish(arr)
