"""The interbotix_xs_sdk set-up services of one robot namespace, served from an XsMotors state
(sim/xs_sdk.py): /<ns>/set_operating_modes, torque_enable, reboot_motors, set_motor_registers,
get_motor_registers. Like xs_sdk, an invalid request is logged and answered empty."""

from __future__ import annotations

from qwen_vla_ros.sim.xs_sdk import XsMotors


def serve_xs_services(node, namespace: str, motors: XsMotors) -> list:
    from interbotix_xs_msgs.srv import OperatingModes, Reboot, RegisterValues, TorqueEnable

    def handler(service: str):
        def cb(request, response):
            fields = {k: getattr(request, k) for k in request.get_fields_and_field_types()}
            result = motors.handle(service, fields)
            if isinstance(result, str):
                node.get_logger().error(f"/{namespace}/{service}: {result}")
            elif isinstance(result, list):
                response.values = result
            return response
        return cb

    table = ((OperatingModes, "set_operating_modes"), (TorqueEnable, "torque_enable"),
             (Reboot, "reboot_motors"), (RegisterValues, "set_motor_registers"),
             (RegisterValues, "get_motor_registers"))
    return [node.create_service(srv, f"/{namespace}/{name}", handler(name))
            for srv, name in table]
