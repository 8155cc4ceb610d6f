"""Image and trajectory conversions against real sensor_msgs / trajectory_msgs classes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from qwen_vla_ros.ros.conversions import (
    ImageConversionError,
    chunk_to_trajectory,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_image,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_to_chunk,
)


def raw(arr: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    rows = arr.reshape(h, w * c)
    padded = np.zeros((h, w * c + pad), np.uint8)
    padded[:, : w * c] = rows
    return Image(height=h, width=w, encoding=encoding, step=w * c + pad,
                 data=padded.tobytes())


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), pad=st.integers(0, 7),
       enc=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]), seed=st.integers(0, 99))
def test_encodings_and_row_padding(h, w, pad, enc, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if enc == "mono8":
        src, want = rgb[:, :, 0], np.repeat(rgb[:, :, :1], 3, axis=2)
    elif enc == "rgb8":
        src, want = rgb, rgb
    elif enc == "bgr8":
        src, want = rgb[:, :, ::-1], rgb
    else:
        alpha = np.full((h, w, 1), 255, np.uint8)
        src = np.concatenate([rgb if enc == "rgba8" else rgb[:, :, ::-1], alpha], axis=2)
        want = rgb
    np.testing.assert_array_equal(image_to_rgb(raw(np.ascontiguousarray(src), enc, pad)), want)


@pytest.mark.parametrize("mutate,message", [
    (lambda m: setattr(m, "encoding", "16UC1"), "unsupported encoding '16UC1'"),
    (lambda m: setattr(m, "step", 5), "step 5 < width"),
    (lambda m: setattr(m, "height", 5), "expected step"),
    (lambda m: setattr(m, "data", m.data[:-3]), "expected step"),
])
def test_bad_raw_images_are_named(mutate, message):
    msg = raw(np.zeros((4, 6, 3), np.uint8), "rgb8")
    mutate(msg)
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(msg)


def _encoded(rgb, fmt):
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def test_png_is_lossless_and_jpeg_close():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    png = CompressedImage(format="png", data=_encoded(rgb, "PNG"))
    np.testing.assert_array_equal(compressed_to_rgb(png), rgb)
    smooth = np.tile(np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None], (32, 1, 3))
    jpg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=_encoded(smooth, "JPEG"))
    assert np.abs(compressed_to_rgb(jpg).astype(int) - smooth).mean() < 3


def test_truncated_jpeg_and_unknown_format_rejected():
    data = _encoded(np.zeros((32, 32, 3), np.uint8), "JPEG")
    with pytest.raises(ImageConversionError, match="cannot decode jpeg"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=data[: len(data) // 3]))
    with pytest.raises(ImageConversionError, match="unsupported compressed format 'webp'"):
        compressed_to_rgb(CompressedImage(format="webp", data=data))


def test_rgb_round_trip_through_image_message():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, Image, stamp=sec_to_stamp(12.5, Time), frame_id="cam")
    assert stamp_to_sec(msg.header.stamp) == pytest.approx(12.5)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_trajectory_round_trip_reorders_by_name():
    actions = np.arange(12, dtype=float).reshape(4, 3)
    msg = chunk_to_trajectory(actions, ["a", "b", "c"], 0.02, JointTrajectory,
                              JointTrajectoryPoint, Duration, stamp=sec_to_stamp(3.0, Time))
    assert [p.time_from_start.nanosec for p in msg.points] == [0, 20_000_000, 40_000_000,
                                                               60_000_000]
    back, stamp, dt = trajectory_to_chunk(msg, ["c", "a", "b"])
    np.testing.assert_array_equal(back, actions[:, [2, 0, 1]])
    assert stamp == pytest.approx(3.0) and dt == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"lacks joints \['d'\]"):
        trajectory_to_chunk(msg, ["a", "d"])


@pytest.mark.parametrize("t", [0.0, 2.9999999999, 3.0, 12.5, 1e-10, 1799999999.9999999])
def test_sec_to_stamp_carries_into_seconds(t):
    """Regression: 2.9999999999 s was written as 2 s 0 ns (the clock jumped back 1 s)."""
    s = sec_to_stamp(t, Time)
    assert 0 <= s.nanosec < 1_000_000_000
    assert abs(stamp_to_sec(s) - t) <= 1e-9 * max(1.0, abs(t)) + 1e-9
