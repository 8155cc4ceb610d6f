"""The CLI's own argument handling (commands are tested where their work is)."""

from __future__ import annotations

import pytest

from qwen_vla_ros.cli import build_parser, policy_params


def test_eval_params_are_read_as_yaml_values():
    args = build_parser().parse_args(
        ["eval", "--checkpoint", "c", "--out", "o", "--param", "stop_threshold:=0.7",
         "--param", "flow_steps:=4", "--param", "compile:=false", "--param", "device:=cpu",
         "--param", "note:=a:=b"])
    assert policy_params(args.param) == {"stop_threshold": 0.7, "flow_steps": 4,
                                         "compile": False, "device": "cpu", "note": "a:=b"}
    assert policy_params([]) == {}
    for bad in ("stop_threshold=0.7", ":=0.7"):
        with pytest.raises(ValueError, match="is not NAME:=VALUE"):
            policy_params([bad])
