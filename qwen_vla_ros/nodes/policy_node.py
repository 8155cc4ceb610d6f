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
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.embodiment.robot_profile import load_profile
from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.errors import QwenVLAError
from qwen_vla_ros.nodes.policy_io import (
    ThrottledWarning,
    clock_now,
    load_checkpoint,
    publish_chunk,
    set_torch_threads,
)
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import (
    ImageConversionError,
    msg_to_rgb,
    stamp_to_sec,
)
from qwen_vla_ros.ros.params import declare_fields, guard, read
from qwen_vla_ros.runtime.executor import RejectedChunk
from qwen_vla_ros.runtime.inference import InferenceWorker, LatencyStats
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop, PolicyParams, Request, stamp_or


def _desc(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


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
        self.policy = None
        self.active = False
        self.status = "unconfigured"
        self.last_error = ""
        self._blind_since: float | None = None  # since when every observation was rejected
        self.spec = None
        self._entities: list = []
        self.latency = LatencyStats()
        self.obs_age = LatencyStats()
        self.chunks_published = 0
        self.ticks = 0
        self.last_obs_age: float | None = None
        self._chunk_times: list[float] = []
        self._lock = threading.Lock()
        self._throttled = ThrottledWarning(self.get_logger())
        self.worker: InferenceWorker | None = None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.COMMAND)
        self.create_timer(1.0, self._publish_diagnostics)
        if (self.get_parameter("autostart").value
                and self.trigger_configure() == TransitionCallbackReturn.SUCCESS):
            self.trigger_activate()

    # ---- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:
            self.last_error = f"configure failed: {exc}"
            self.status = self.last_error
            self.get_logger().error(self.last_error)
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.status = "configured"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.status = "active: waiting for observations"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.status = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.status = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self.active = False
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        for entity in self._entities:
            if isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
            elif isinstance(entity, Publisher):
                self.destroy_publisher(entity)
        self._entities = []
        owned = self.policy is not None and self.policy is not self._injected_policy
        self.policy = None
        if owned:
            _free_accelerator_memory()

    def _configure(self) -> None:
        self.params = params = read(self, PolicyParams)
        p = self.declare_parameter
        self.spec = load_embodiment(params.embodiment)
        overrides = set(getattr(self, "_parameter_overrides", {}))
        cams = [k.split(".", 1)[1] for k in overrides if k.startswith("camera_topics.")]
        unknown = sorted(set(cams) - set(self.spec.cameras))
        if unknown:
            raise ValueError(f"camera_topics names {unknown} are not cameras of "
                             f"'{self.spec.name}' ({list(self.spec.cameras)})")
        self.steps = params.flow_steps
        self.loop = PolicyLoop(self.spec, params.max_observation_age, seed=params.seed,
                               prefix_steps=params.rtc_prefix_steps,
                               instruction=params.instruction)
        ents = self._entities
        profile = None
        if params.robot_profile:
            profile = load_profile(params.robot_profile)
            profile.check(self.spec)  # every camera the embodiment needs has a topic
        for cam in self.spec.cameras:
            default = profile.cameras[cam] if profile else f"{cam}/image_raw"
            topic = self._param(p, f"camera_topics.{cam}", default,
                                f"topic of camera slot '{cam}'")
            compressed = self._param(p, f"camera_compressed.{cam}", False,
                                     f"'{cam}' is sensor_msgs/CompressedImage")
            msg_type = CompressedImage if compressed else Image
            ents.append(self.create_subscription(msg_type, topic,
                                                 self._image_cb(cam, compressed), qos.SENSOR))
        for robot in self.loop.merger.robots():
            key = robot or "robot"
            ns = profile.followers.get(robot, robot) if profile else robot
            default = f"/{ns}/joint_states" if robot else "joint_states"
            topic = self._param(p, f"joint_state_topics.{key}", default,
                                f"JointState topic of '{key}'")
            ents.append(self.create_subscription(JointState, topic, self._joint_cb(robot),
                                                 qos.SENSOR))
        ents.append(self.create_subscription(String, "~/instruction", self._instruction_cb,
                                             qos.COMMAND))
        self.chunk_pub = self.create_publisher(JointTrajectory, "~/action_chunk", qos.COMMAND)
        ents.append(self.chunk_pub)
        self.info_pub = self.create_publisher(String, "~/observation_info", qos.COMMAND)
        ents.append(self.info_pub)
        set_torch_threads(params.torch_threads)
        self.policy = (self._injected_policy if self._injected_policy is not None
                       else self._load_policy())
        self.policy.spec(self.spec.name)  # the checkpoint must know this embodiment
        self.worker = InferenceWorker(self._infer, self._on_chunk, self._on_error)
        ents.append(self.create_timer(1.0 / params.inference_rate_hz, self._tick))

    def _param(self, declare, name: str, default, description: str):
        if self.has_parameter(name):
            return self.get_parameter(name).value
        return declare(name, default, _desc(description)).value

    # ---- setup --------------------------------------------------------------------------
    def _load_policy(self):
        params = self.params
        return load_checkpoint(params.checkpoint, params.device, params.dtype,
                               self.get_logger())

    def now(self) -> float:
        return clock_now(self)

    def _warn(self, key: str, text: str, period: float = 2.0) -> None:
        self._throttled(key, text, period)
        self.status = text

    # ---- inputs -------------------------------------------------------------------------
    def _stamp(self, header) -> float:
        return stamp_or(stamp_to_sec(header.stamp), self.now())

    def _image_cb(self, cam: str, compressed: bool):
        def cb(msg) -> None:
            try:
                rgb = msg_to_rgb(msg, compressed)
            except ImageConversionError as exc:
                self._warn(f"img:{cam}", f"camera '{cam}': frame rejected: {exc}")
                return
            self.loop.add_image(cam, rgb, self._stamp(msg.header))
        return cb

    def _joint_cb(self, robot: str):
        def cb(msg: JointState) -> None:
            reason = self.loop.add_joint_state(robot, msg.name, msg.position,
                                               self._stamp(msg.header))
            if reason:
                self._warn(f"js:{robot}", f"joint state rejected: {reason}")
        return cb

    def _instruction_cb(self, msg: String) -> None:
        reason = self.loop.set_instruction(msg.data)
        if reason:
            self._warn("instr", reason)
            return
        self.get_logger().info(f"instruction: {self.loop.instruction!r}")

    # ---- inference ----------------------------------------------------------------------
    def _tick(self) -> None:
        self.ticks += 1  # inference ticks run (tests step a clock against it)
        try:
            self._request_chunk()
        except Exception as exc:
            self._warn("tick", f"observation assembly failed: {type(exc).__name__}: {exc}")

    def _request_chunk(self) -> None:
        if not self.active or self.worker is None or not self.worker.idle():
            return
        now = self.now()
        with self._lock:
            request = self.loop.request(now)
        if isinstance(request, Rejection):
            # A camera or arm gone quiet: every tick is rejected; shown as ERROR after 0.5 s.
            self._blind_since = now if self._blind_since is None else self._blind_since
            self._warn("obs", f"no valid observation for {now - self._blind_since:.1f} s: "
                              f"{request}")
            return
        self._blind_since = None
        self.last_obs_age = request.age
        self.obs_age.add(request.age * 1e3)
        self.worker.submit(request)

    def _infer(self, request: Request):
        return self.policy.predict(request.observation, seed=request.seed, steps=self.steps,
                                   prefix=request.prefix)

    def _on_chunk(self, request: Request, chunk) -> None:
        if not self.active:
            return  # deactivated while the model ran: publish nothing
        try:
            with self._lock:
                reason = self.loop.accept(request, chunk)
        except RejectedChunk as exc:
            reason = f"chunk rejected: {exc}"
        if reason:
            self.get_logger().error(reason)
            self.status = reason
            return
        self.latency.add(chunk.timing_ms["total"])
        publish_chunk(self.chunk_pub, self.info_pub, self.spec.action_names, chunk, request,
                      self.steps)
        self.chunks_published += 1
        self._chunk_times.append(time.monotonic())
        self.status = "ok"

    def _on_error(self, request, exc: BaseException) -> None:
        level = self.get_logger().error if not isinstance(exc, (QwenVLAError, ValueError,
                                                                KeyError)) else \
            self.get_logger().warning
        level(f"inference failed: {type(exc).__name__}: {exc}")
        self.status = f"inference failed: {exc}"

    # ---- diagnostics --------------------------------------------------------------------
    @staticmethod
    def _fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    def _publish_diagnostics(self) -> None:
        t = time.monotonic()
        self._chunk_times = [x for x in self._chunk_times if t - x <= 5.0]
        p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
        st = DiagnosticStatus(name="qwen_vla_ros: policy",
                              hardware_id=self.spec.name if self.spec else "")
        blind = self._blind_since is not None and self.now() - self._blind_since > 0.5
        st.level = (DiagnosticStatus.OK if self.status == "ok" else
                    DiagnosticStatus.ERROR if (self.last_error and not self.active) or blind else
                    DiagnosticStatus.WARN)
        st.message = self.status
        st.values = [
            KeyValue(key="inference_ms_p50", value=self._fmt(p50)),
            KeyValue(key="inference_ms_p99", value=self._fmt(p99)),
            KeyValue(key="observation_age_ms_p50", value=self._fmt(self.obs_age.percentile(50))),
            KeyValue(key="observation_age_ms_p99", value=self._fmt(self.obs_age.percentile(99))),
            KeyValue(key="chunk_rate_hz", value=f"{len(self._chunk_times) / 5.0:.2f}"),
            KeyValue(key="chunks_published", value=str(self.chunks_published)),
            KeyValue(key="requests_dropped",
                     value=str(self.worker.dropped if self.worker else 0)),
        ]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(PolicyNode, args)


if __name__ == "__main__":
    main()
