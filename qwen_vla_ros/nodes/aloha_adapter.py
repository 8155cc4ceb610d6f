"""aloha_adapter: drive the ALOHA follower arms through interbotix_xs_sdk.

Per follower (namespaces from the robot profile, config/robots/<robot_profile>.yaml):
  pub /<ns>/commands/joint_group   interbotix_xs_msgs/JointGroupCommand, group "arm",
                                   6 joints in xs_sdk order
  pub /<ns>/commands/joint_single  interbotix_xs_msgs/JointSingleCommand, "gripper": motor
                                   angle (rad), valid once the gripper is current_based_position
  sub /<ns>/joint_states           measured pose (sensor_msgs/JointState; the gripper is read
                                   from its finger slide, as ALOHA datasets record it)
  cli /<ns>/set_operating_modes, torque_enable, reboot_motors, set_motor_registers
Per leader (TELEOP):
  sub /<leader>/joint_states       the followers track the leaders, through the same position
                                   and velocity limits as the policy
  cli /<leader>/torque_enable      leaders torque-off, so a person can move them
Own interface:
  pub ~/state  (std_msgs/String, latched): start-up phase, e.g. "READY", "FAILED: <why>"
  srv ~/start  (std_srvs/Trigger): run the start-up sequence (again)
  srv ~/sleep  (std_srvs/Trigger): HOLD, then move through START_ARM_POSE to the sleep pose
               (also on SIGINT/SIGTERM with ``sleep_on_shutdown``)

Start-up (runtime/startup.py): the xs_sdk set-up calls, then a slow move to START_ARM_POSE;
TELEOP/POLICY requested before that wait and are engaged once it is done. A failed call is
an error naming the service: the arms hold, the mode stays HOLD, ``~/start`` retries.
"""

from __future__ import annotations

import time

import numpy as np
from std_msgs.msg import String
from std_srvs.srv import Trigger

from qwen_vla_ros.embodiment.robot_profile import load_profile
from qwen_vla_ros.nodes.adapter_base import ChunkAdapterNode
from qwen_vla_ros.ros import qos
from qwen_vla_ros.runtime.interbotix import split_command
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.observation import JointStateMerger, Rejection
from qwen_vla_ros.runtime.startup import (
    AlohaAdapterParams,
    Phase,
    ServiceCall,
    StartupSequence,
)


class AlohaAdapter(ChunkAdapterNode):
    def __init__(self, **kwargs) -> None:
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
        from interbotix_xs_msgs.srv import OperatingModes, Reboot, RegisterValues, TorqueEnable

        super().__init__("aloha_adapter", AlohaAdapterParams, **kwargs)
        params: AlohaAdapterParams = self.params  # type: ignore[assignment]
        profile, startup = params.robot_profile, params.startup
        self.sleep_torque_off = params.sleep_torque_off
        self.sleep_on_shutdown = params.sleep_on_shutdown
        self.shutdown_timeout = params.shutdown_timeout_s
        self.shutdown_budget_s = self.shutdown_timeout if self.sleep_on_shutdown else 0.0
        self.profile = load_profile(profile)
        self.sequence = StartupSequence(self.profile, self.spec, self.limits, self.spec.dt)
        if self.sequence.sleep_clipped:
            self.get_logger().warning(
                f"robot profile '{profile}': sleep pose is beyond the joint limits for "
                f"{self.sequence.sleep_clipped}; sleeping stops at those limits")
        self._srv_types = {"set_operating_modes": OperatingModes, "torque_enable": TorqueEnable,
                           "reboot_motors": Reboot, "set_motor_registers": RegisterValues}
        self._xs_clients: dict[tuple[str, str], object] = {}
        self._inflight: tuple[object, float, ServiceCall] | None = None
        self._waiting_since: float | None = None
        self._group_cls, self._single_cls = JointGroupCommand, JointSingleCommand
        self.leaders = JointStateMerger(self.spec, leaders=True) if self.spec.teleop else None
        self.group_pubs, self.single_pubs = {}, {}
        for follower in self.spec.robots:
            ns = self.profile.followers[follower]
            self.subscribe_joint_states(f"/{ns}/joint_states", self.measured, [follower])
            self.group_pubs[follower] = self.create_publisher(
                JointGroupCommand, f"/{ns}/commands/joint_group", qos.COMMAND)
            self.single_pubs[follower] = self.create_publisher(
                JointSingleCommand, f"/{ns}/commands/joint_single", qos.COMMAND)
            leader = self.spec.leader_of(follower)
            if leader is not None and self.leaders is not None:
                lns = self.profile.leaders.get(follower, leader.robot)
                self.subscribe_joint_states(f"/{lns}/joint_states", self.leaders,
                                            [leader.robot])
        self.state_pub = self.create_publisher(String, "~/state", qos.LATCHED)
        self.create_service(Trigger, "~/start", self._start_srv)
        self.create_service(Trigger, "~/sleep", self._sleep_srv)
        self._published_state = ""
        if startup:
            self.sequence.start()
        else:
            self.sequence.phase = Phase.READY
        self._publish_state()

    # ---- start-up and sleep -------------------------------------------------------------
    def engage_blocker(self) -> str | None:
        return self.sequence.blocker()

    def refusal(self) -> str | None:
        if self.sequence.phase in (Phase.FAILED, Phase.ASLEEP):
            return self.sequence.blocker()
        return None

    def hold_tick(self, now: float) -> None:
        if self.pending_mode is not None and self.sequence.phase in (Phase.FAILED,
                                                                     Phase.ASLEEP):
            # Refused, not deferred: ~/start must not engage a mode asked for long before.
            self.refuse(f"{self.pending_mode.value} refused: {self.sequence.blocker()}")
        self._service_tick()
        measured = self.measured.state(now, self.max_state_age)
        cmd = self.sequence.step(None if isinstance(measured, Rejection) else measured,
                                 self.chunk_executor.last_command)
        if cmd is not None:
            self.chunk_executor.set_last_command(cmd)
            self.send(cmd)
        self._publish_state()

    def _service_tick(self) -> None:
        """Perform the sequence's next xs_sdk call, one at a time, without blocking."""
        timeout = self.profile.setup.service_timeout_s if self.profile.setup else 5.0
        wall = time.monotonic()
        if self._inflight is not None:
            future, deadline, call = self._inflight
            if future.done():
                self._inflight = None
                exc = future.exception()
                self.sequence.call_done(exc is None, f"{type(exc).__name__}: {exc}")
                if exc is None:
                    self.get_logger().info(f"done: {call.describe()}")
            elif wall > deadline:
                future.cancel()
                self._inflight = None
                self.sequence.call_done(False, f"no answer within {timeout:g} s")
            return
        call = self.sequence.next_call()
        if call is None:
            self._waiting_since = None
            return
        client = self._client(call)
        if not client.service_is_ready():
            self._waiting_since = self._waiting_since or wall
            if wall - self._waiting_since > timeout:
                self._waiting_since = None
                self.sequence.call_done(False, f"service not available after {timeout:g} s "
                                               "(is the Interbotix bringup running?)")
            return
        self._waiting_since = None
        request = self._srv_types[call.service].Request(**call.fields)
        self._inflight = (client.call_async(request), wall + timeout, call)

    def _client(self, call: ServiceCall):
        key = (call.namespace, call.service)
        if key not in self._xs_clients:
            self._xs_clients[key] = self.create_client(self._srv_types[call.service],
                                                    f"/{call.namespace}/{call.service}")
        return self._xs_clients[key]

    def _publish_state(self) -> None:
        text = self.sequence.phase.value
        if self.sequence.error:
            text += f": {self.sequence.error}"
        if text != self._published_state:
            self._published_state = text
            self.state_pub.publish(String(data=text))
            if self.sequence.phase is Phase.FAILED:
                self.get_logger().error(f"arms: {text}")
            else:
                self.get_logger().info(f"arms: {text}")

    def _start_srv(self, _request, response):
        if self.sequence.phase in (Phase.CONFIGURING, Phase.MOVING, Phase.SLEEPING):
            response.success, response.message = False, f"busy: {self.sequence.phase.value}"
            return response
        self.request_mode(Mode.HOLD)
        self.sequence.start()
        self._publish_state()
        response.success, response.message = True, "starting: set-up, then START_ARM_POSE"
        return response

    def _sleep_srv(self, _request, response):
        self.request_mode(Mode.HOLD)
        self.sequence.sleep(self.sleep_torque_off)
        self._publish_state()
        response.success, response.message = True, "moving to the sleep pose (HOLD)"
        return response

    def on_shutdown(self, executor) -> None:
        """Called by spin_node after SIGINT/SIGTERM, still spinning: the sleep move if asked,
        bounded by ``shutdown_timeout_s`` of wall time."""
        if not self.sleep_on_shutdown or self.sequence.phase is not Phase.READY:
            return
        self.get_logger().info("shutting down: moving to the sleep pose first")
        self._sleep_srv(None, Trigger.Response())
        end = time.monotonic() + self.shutdown_timeout
        while self.sequence.phase is Phase.SLEEPING and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        if self.sequence.phase is Phase.SLEEPING:
            self.get_logger().error(f"sleep move not finished after {self.shutdown_timeout:g} "
                                    "s; exiting with the arms holding where they are")

    # ---- driving ------------------------------------------------------------------------
    def teleop_target(self, now: float) -> np.ndarray | Rejection:
        if self.leaders is None:
            return Rejection(f"embodiment '{self.spec.name}' has no leader arms")
        return self.leaders.state(now, self.max_state_age)

    def send(self, position: np.ndarray) -> None:
        for arm in split_command(self.spec, position):
            self.group_pubs[arm.robot].publish(
                self._group_cls(name=arm.group, cmd=[float(x) for x in arm.arm]))
            if arm.gripper is not None:
                self.single_pubs[arm.robot].publish(
                    self._single_cls(name=arm.gripper_joint, cmd=float(arm.gripper)))


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(AlohaAdapter, args)


if __name__ == "__main__":
    main()
