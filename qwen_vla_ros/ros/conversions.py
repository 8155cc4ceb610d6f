"""sensor_msgs / trajectory_msgs <-> numpy. Imports only message packages, never rclpy nodes.

Images: rgb8, bgr8, rgba8, bgra8, mono8 with row padding (``step``) -> HxWx3 uint8 RGB, the
same pixels cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")`` gives. CompressedImage: jpeg / png via
Pillow. Every failure is an ``ImageConversionError`` saying what was wrong.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ImageConversionError(ValueError):
    pass


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float, stamp_cls):
    # Round the whole time to ns first: t = 2.9999999999 is 3 s 0 ns, not 2 s 0 ns.
    sec, nanosec = divmod(round(t * 1e9), 1_000_000_000)
    return stamp_cls(sec=int(sec), nanosec=int(nanosec))


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB (a copy)."""
    enc = msg.encoding.lower()
    if enc not in CHANNELS:
        raise ImageConversionError(f"unsupported encoding '{msg.encoding}'; "
                                   f"supported: {sorted(CHANNELS)}")
    c = CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"empty image {w}x{h}")
    if step < w * c:
        raise ImageConversionError(f"step {step} < width {w} x {c} channels")
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray,
                                                                     memoryview))
                         else msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise ImageConversionError(f"data has {data.size} bytes, expected step {step} x "
                                   f"height {h} = {step * h}")
    rows = data.reshape(h, step)[:, : w * c].reshape(h, w, c)
    if enc == "mono8":
        return np.repeat(rows, 3, axis=2)
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(rows[:, :, 2::-1])
    return np.ascontiguousarray(rows[:, :, :3])


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> HxWx3 uint8 RGB."""
    from PIL import Image as PILImage

    fmt = msg.format.lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageConversionError(f"unsupported compressed format '{msg.format}'")
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ImageConversionError(f"cannot decode {msg.format} image "
                                   f"({len(msg.data)} bytes): {exc}") from exc


def msg_to_rgb(msg, compressed: bool) -> np.ndarray:
    """Image or CompressedImage -> HxWx3 uint8 RGB (the live node and replay both use this)."""
    return compressed_to_rgb(msg) if compressed else image_to_rgb(msg)


def rgb_to_image(rgb: np.ndarray, msg_cls, stamp=None, frame_id: str = ""):
    """HxWx3 uint8 RGB -> sensor_msgs/Image (rgb8), using bytes (fast path)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageConversionError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    msg = msg_cls()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def scan_to_arrays(msg) -> tuple[np.ndarray, np.ndarray, float]:
    """sensor_msgs/LaserScan -> (angles, ranges, range_min); a range above range_max is
    "nothing there" (inf), as the message's convention has it."""
    ranges = np.asarray(msg.ranges, np.float64)
    angles = msg.angle_min + msg.angle_increment * np.arange(len(ranges))
    return angles, np.where(ranges > msg.range_max, np.inf, ranges), float(msg.range_min)


def arrays_to_scan(angles: np.ndarray, ranges: np.ndarray, range_max: float, msg_cls,
                   stamp=None, frame_id: str = ""):
    """Evenly spaced (angles, ranges) -> sensor_msgs/LaserScan (inf: above range_max)."""
    msg = msg_cls()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.angle_min = float(angles[0])
    msg.angle_increment = float(angles[1] - angles[0]) if len(angles) > 1 else 0.0
    msg.angle_max = float(angles[-1])
    msg.range_min, msg.range_max = 0.0, float(range_max)
    msg.ranges = [float(r) if np.isfinite(r) else float("inf") for r in ranges]
    return msg


def pose_2d(position, orientation):
    """The planar pose (x, y, yaw about z) of a geometry_msgs Point/Vector3 and Quaternion,
    e.g. an Odometry's pose or a TransformStamped's transform."""
    from qwen_vla_ros.runtime.navigation import Pose2D, yaw_from_quaternion

    q = orientation
    return Pose2D(float(position.x), float(position.y),
                  yaw_from_quaternion(q.x, q.y, q.z, q.w))


def transforms_between(msg, parent: str, child: str) -> Iterator:
    """The transforms ``parent`` -> ``child`` in a tf2_msgs/TFMessage (a leading "/" on a
    frame name ignored)."""
    return (tf for tf in msg.transforms if tf.header.frame_id.lstrip("/") == parent
            and tf.child_frame_id.lstrip("/") == child)


def pose_stamped(msg_cls, x: float, y: float, yaw: float, header):
    """A geometry_msgs/PoseStamped (``msg_cls``) at (x, y) turned ``yaw`` about z."""
    from qwen_vla_ros.runtime.navigation import quaternion_from_yaw

    ps = msg_cls(header=header)
    ps.pose.position.x, ps.pose.position.y = float(x), float(y)
    o = ps.pose.orientation
    o.x, o.y, o.z, o.w = quaternion_from_yaw(float(yaw))
    return ps


def chunk_to_trajectory(actions: np.ndarray, joint_names: Sequence[str], dt: float, msg_cls,
                        point_cls, duration_cls, stamp=None, frame_id: str = ""):
    """[H, D] -> trajectory_msgs/JointTrajectory with time_from_start = k * dt."""
    msg = msg_cls()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    points = []
    for k, row in enumerate(np.asarray(actions, dtype=np.float64)):
        p = point_cls()
        p.positions = row.tolist()
        p.time_from_start = sec_to_stamp(k * dt, duration_cls)
        points.append(p)
    msg.points = points
    return msg


def trajectory_to_chunk(msg, joint_names: Sequence[str]) -> tuple[np.ndarray, float, float]:
    """JointTrajectory -> (actions [H, D] in ``joint_names`` order, stamp, dt)."""
    index = {n: i for i, n in enumerate(msg.joint_names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ValueError(f"trajectory lacks joints {missing}")
    if len(msg.points) == 0:
        raise ValueError("trajectory has no points")
    order = [index[n] for n in joint_names]
    rows = []
    for p in msg.points:
        if len(p.positions) != len(msg.joint_names):
            raise ValueError(f"point has {len(p.positions)} positions for "
                             f"{len(msg.joint_names)} joints")
        rows.append(np.asarray(p.positions, dtype=np.float64)[order])
    times = [stamp_to_sec(p.time_from_start) for p in msg.points]
    dt = (times[1] - times[0]) if len(times) > 1 else 0.02
    stamp = stamp_to_sec(msg.header.stamp) + times[0]
    return np.stack(rows), stamp, dt
