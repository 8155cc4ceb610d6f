"""policy_node: cameras + joint states + instruction -> action chunks (JointTrajectory).

Wiring only: observation assembly, staleness and chunk checks live in ``runtime/``; the model
in ``model/``. Inference runs on a worker thread, so subscriptions, services and timers never
wait for the model.

Topics (relative, remappable):
  sub  <camera topic per camera>      sensor_msgs/Image or CompressedImage (sensor QoS)
  sub  <joint-state topic per robot>  sensor_msgs/JointState (sensor QoS)
  sub  ~/instruction                  std_msgs/String
  pub  ~/action_chunk                 trajectory_msgs/JointTrajectory, joint_names = the
                                      embodiment's dimension names, header.stamp = the
                                      observation time, time_from_start = k * dt
  pub  ~/observation_info             std_msgs/String, JSON, one per published chunk: tick
                                      time, observation stamp, the stamp of every input
                                      used, seed, flow steps and the state vector (what the
                                      policy saw; offline replay uses it to reproduce chunks)
  pub  /diagnostics                   diagnostic_msgs/DiagnosticArray (1 Hz)
  With pace_sim (benchmarks in simulation only; runtime/pacing.py):
  sub  /clock                         rosgraph_msgs/Clock: requests follow the sim's clock
  pub  /sim_pace                      std_msgs/Float64: sim time the simulator may run to
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import String

from qwen_vla_ros.embodiment.robot_profile import load_profile
from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.nodes.policy_io import (
    PolicyHost,
    ThrottledWarning,
    clock_now,
    guarded,
    open_policy,
)
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.diagnostics import publish_diagnostics
from qwen_vla_ros.ros.params import declare_fields, guard, read
from qwen_vla_ros.runtime.inference import LatencyStats
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop, PolicyParams, Request

OK = TransitionCallbackReturn.SUCCESS


class PolicyNode(LifecycleNode):
    """Lifecycle: configure (validate parameters, load the checkpoint, subscribe), activate
    (infer and publish), deactivate (stop inferring), cleanup (free the model).
    ``autostart`` (default true) runs configure + activate at start-up. A failed transition is
    logged with its reason (``last_error``, /diagnostics) and the node stays up."""

    def __init__(self, policy=None, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        declare_fields(self, PolicyParams)
        guard(self, PolicyParams, reread_at="configure")
        self._injected_policy = policy
        self.active = False
        self.status = "unconfigured"
        self.last_error = ""
        self.spec = None
        self.host: PolicyHost | None = None
        self.pacer = None  # runtime/pacing.Pacer with pace_sim
        self.ticks = 0  # inference ticks run (tests step a clock against it)
        self._warn_once = ThrottledWarning(self.get_logger())
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.COMMAND)
        self.create_timer(1.0, self._publish_diagnostics)
        if self.get_parameter("autostart").value and self.trigger_configure() == OK:
            self.trigger_activate()

    @property
    def policy(self):
        return self.host.policy if self.host else None

    # ---- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:
            self.last_error = self.status = f"configure failed: {exc}"
            self.get_logger().error(self.last_error)
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.status = "configured"
        return OK

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A fresh run: the plan from before is not the one the adapter will engage with.
        self.loop.restart(self.now())
        if self.pacer is not None:
            from qwen_vla_ros.runtime.pacing import Pacer

            self.pacer, self._granted = Pacer(self.pacer.delay_s, self.pacer.period_s), None
        self.active, self.status = True, "active: waiting for observations"
        if self.pacer is not None:
            self._pace()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active, self.status = False, "inactive"
        self._release_sim()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.status = "unconfigured"
        return OK

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return OK

    def _release(self) -> None:
        self.active = False
        self._release_sim()
        host, self.host = self.host, None
        if host is not None:
            host.release(keep=self._injected_policy)

    def _configure(self) -> None:
        self.params = params = read(self, PolicyParams)
        policy = open_policy(self._injected_policy, params, params.embodiment, self.get_logger())
        # The cameras the checkpoint was trained to see (train --cameras), a subset of the body's.
        self.spec = spec = load_embodiment(params.embodiment).with_cameras(
            policy.spec(params.embodiment).cameras)
        self.loop = loop = PolicyLoop.from_params(spec, params)
        profile = load_profile(params.robot_profile) if params.robot_profile else None
        self.host = host = PolicyHost(self, spec.action_names, params.flow_steps,
                                      self._on_chunk, self._set_status)
        host.added_latency = params.added_latency_ms / 1e3
        host.subscribe_observation(loop, profile, self._warn)
        host.entities.append(self.create_subscription(String, "~/instruction",
                                                      self._instruction_cb, qos.COMMAND))
        host.policy = policy
        self.pacer = None
        if params.pace_sim:  # the sim's clock drives requests; no timer
            self._configure_pacing(host, params)
        else:
            host.entities.append(self.create_timer(1.0 / params.inference_rate_hz,
                                                   guarded(self._tick, self._warn)))

    def _configure_pacing(self, host: PolicyHost, params: PolicyParams) -> None:
        import threading

        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import Float64

        from qwen_vla_ros.ros.conversions import stamp_to_sec
        from qwen_vla_ros.runtime.pacing import PACE_TOPIC, Pacer

        self.pacer = Pacer(params.added_latency_ms / 1e3, 1.0 / params.inference_rate_hz)
        host.added_latency = 0.0  # the pacer holds each chunk for it, in sim time
        self._pace_lock = threading.Lock()
        self._sim_now = None  # the sim's last clock reading
        self._granted = None
        self._grant_pub = self.create_publisher(Float64, PACE_TOPIC, qos.COMMAND)
        host.entities.append(self._grant_pub)

        def on_clock(msg) -> None:
            self._sim_now = stamp_to_sec(msg.clock)
            self._pace()

        def on_failure() -> None:
            if self._sim_now is not None:
                self.pacer.failed(self._sim_now)
            self._pace()

        host.on_failure = on_failure
        host.on_input = self._pace  # a request may be waiting for this input
        host.entities.append(self.create_subscription(Clock, "/clock",
                                                      guarded(on_clock, self._warn),
                                                      qos.COMMAND))

    def _pace(self) -> None:
        """What the pacer says is due at the sim's last clock reading, then its grant."""
        from std_msgs.msg import Float64

        with self._pace_lock:
            host, now = self.host, self._sim_now
            if not self.active or host is None or now is None:
                return
            due = self.pacer.tick(now, ready=lambda: not self.loop.awaiting(now))
            if due.publish is not None:
                self._publish(*due.publish, now=now)
            if due.request and not self._request(now):
                self.pacer.failed(now)
            if self.pacer.grant != self._granted:
                self._granted = self.pacer.grant
                self._grant_pub.publish(Float64(data=self._granted))

    def _release_sim(self) -> None:
        """Let a paced sim run free (deactivated, cleaned up)."""
        from std_msgs.msg import Float64

        if self.pacer is not None and self.host is not None:
            self._granted = float("inf")
            self._grant_pub.publish(Float64(data=self._granted))

    def now(self) -> float:
        return clock_now(self)

    def _warn(self, key: str, text: str) -> None:
        self._warn_once(key, text)
        self.status = text

    def _set_status(self, text: str) -> None:
        self.status = text

    # ---- inputs -------------------------------------------------------------------------
    def _instruction_cb(self, msg: String) -> None:
        reason = self.loop.set_instruction(msg.data)
        if reason:
            self._warn("instr", reason)
            return
        self.get_logger().info(f"instruction: {self.loop.instruction!r}")

    # ---- inference ----------------------------------------------------------------------
    def _tick(self) -> None:
        self.ticks += 1
        host = self.host
        if not self.active or host is None or not host.worker.idle():
            return
        self._request(self.now())

    def _request(self, now: float) -> bool:
        """Ask the model for a chunk of the observation at ``now``; False if there is none."""
        request = self.loop.request(now)
        if isinstance(request, Rejection):
            # A camera or arm gone quiet: every tick is rejected; shown as ERROR after 0.5 s.
            self._warn("obs", f"no valid observation for "
                              f"{now - self.loop.blind_since:.1f} s: {request}")
            return False
        self.host.worker.submit(request)
        return True

    def _on_chunk(self, request: Request, chunk) -> None:
        if self.loop.before_restart(request):
            return  # asked for before this activation: no pacer waits for it
        if self.pacer is not None:  # published when the sim's clock reaches its time
            self.pacer.finished(request, chunk)
            self._pace()
            return
        self._publish(request, chunk, self.now())

    def _publish(self, request: Request, chunk, now: float) -> None:
        host = self.host
        if not self.active or host is None:
            return  # deactivated while the model ran: publish nothing
        reason = self.loop.accept(request, chunk, now=now)
        if reason:
            self.get_logger().error(reason)
            self.status = reason
            return
        host.publish(request, chunk, self.loop.last_tag.text())
        if self.loop.delay_change:
            old, new = self.loop.delay_change
            self.get_logger().info(f"measured delay {old} -> {new} control steps (RTC prefix)")
        self.status = "ok"

    # ---- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        loop = self.loop if self.host else None
        blind = loop is not None and loop.blind(self.now())
        level = ("OK" if self.status == "ok" else
                 "ERROR" if (self.last_error and not self.active) or blind else "WARN")
        age = loop.obs_age if loop else LatencyStats()
        publish_diagnostics(self, self.diag_pub, "qwen_vla_ros: policy",
                            self.spec.name if self.spec else "", level, self.status, {
                                **(self.host.diagnostic_values() if self.host else {}),
                                "observation_age_ms_p50": age.percentile(50),
                                "observation_age_ms_p99": age.percentile(99),
                                "instructions_ignored": loop.instructions_ignored if loop else 0})

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(PolicyNode, args)


if __name__ == "__main__":
    main()
