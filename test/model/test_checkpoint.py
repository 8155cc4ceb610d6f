"""Checkpoint round trip and the errors for corrupt, mismatched or incomplete checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import camera_images

from qwen_vla_ros.errors import CheckpointError, MissingStatisticError
from qwen_vla_ros.model.policy import Observation, QwenVLAPolicy


@pytest.fixture()
def ckpt_copy(tiny_checkpoint, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


def _obs(policy):
    spec = policy.spec("aloha")
    return Observation(camera_images(spec, 3), np.zeros(14), "fold the towel", "aloha")


def test_round_trip_gives_identical_outputs(tiny_policy, tiny_checkpoint):
    loaded = QwenVLAPolicy.from_pretrained(tiny_checkpoint)
    a = tiny_policy.predict(_obs(tiny_policy), seed=11).actions
    b = loaded.predict(_obs(loaded), seed=11).actions
    np.testing.assert_array_equal(a, b)


def test_truncated_decoder_file_is_named(ckpt_copy):
    path = ckpt_copy / "decoder.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"decoder\.safetensors is corrupt or truncated"):
        QwenVLAPolicy.from_pretrained(ckpt_copy)


def test_shape_mismatch_names_tensor_and_both_shapes(ckpt_copy):
    meta_path = ckpt_copy / "qwen_vla.json"
    meta = json.loads(meta_path.read_text())
    meta["policy"]["decoder"]["action_width"] = 40
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        QwenVLAPolicy.from_pretrained(ckpt_copy)
    msg = str(err.value)
    assert "tensor 'action_in.weight' has shape [128, 64] in the file" in msg
    assert "expects [128, 80]" in msg


def test_missing_statistic_is_named(ckpt_copy):
    path = ckpt_copy / "norm_stats.json"
    stats = json.loads(path.read_text())
    del stats["aloha"]["action"]["std"]
    path.write_text(json.dumps(stats))
    with pytest.raises(MissingStatisticError, match=r"'aloha' lack 'action\.std'"):
        QwenVLAPolicy.from_pretrained(ckpt_copy)


def test_missing_embodiment_statistics_are_named(ckpt_copy):
    path = ckpt_copy / "norm_stats.json"
    stats = json.loads(path.read_text())
    del stats["vln"]
    path.write_text(json.dumps(stats))
    with pytest.raises(MissingStatisticError, match="no embodiment 'vln'"):
        QwenVLAPolicy.from_pretrained(ckpt_copy)


@pytest.mark.parametrize("victim,message", [
    ("qwen_vla.json", "not a qwen_vla checkpoint"),
    ("decoder.safetensors", "missing decoder.safetensors"),
    ("norm_stats.json", "missing norm_stats.json"),
    ("backbone/config.json", "has no config.json"),
])
def test_missing_files_are_named(ckpt_copy, victim, message):
    (ckpt_copy / victim).unlink()
    with pytest.raises(CheckpointError, match=message):
        QwenVLAPolicy.from_pretrained(ckpt_copy)


def test_unknown_config_key_and_wrong_version_rejected(ckpt_copy):
    meta_path = ckpt_copy / "qwen_vla.json"
    meta = json.loads(meta_path.read_text())
    meta["policy"]["temperature"] = 1.0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unknown policy key\(s\) \['temperature'\]"):
        QwenVLAPolicy.from_pretrained(ckpt_copy)
    del meta["policy"]["temperature"]
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99"):
        QwenVLAPolicy.from_pretrained(ckpt_copy)


def test_non_finite_weights_rejected(ckpt_copy):
    from safetensors.torch import load_file, save_file

    path = ckpt_copy / "decoder.safetensors"
    tensors = load_file(str(path))
    tensors["out.bias"][0] = float("nan")
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"non-finite values in \['out\.bias'\]"):
        QwenVLAPolicy.from_pretrained(ckpt_copy)


def test_cli_writes_a_loadable_tiny_checkpoint(tmp_path):
    out = tmp_path / "cli_ckpt"
    proc = subprocess.run([sys.executable, "-m", "qwen_vla_ros.cli", "checkpoint", "tiny",
                           str(out), "--embodiment", "aloha"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    policy = QwenVLAPolicy.from_pretrained(out)
    assert sorted(policy.embodiments) == ["aloha"]
    assert policy.predict(_obs(policy), seed=0).actions.shape == (50, 14)
