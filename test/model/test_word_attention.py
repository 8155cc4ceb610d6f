"""bench/word_attention.py: the decoder's cross-attention read from its own queries."""

from __future__ import annotations

import numpy as np
import torch
from conftest import bench_module, camera_images

from qwen_vla_ros.model.policy import Observation


def vln_batch(policy, instructions):
    spec = policy.spec("vln")
    state = (spec.lower() + spec.upper())[[spec.action_names.index(s) for s in spec.state]] / 2
    obs = [Observation(images=camera_images(spec, i), state=state, instruction=text,
                       embodiment="vln") for i, text in enumerate(instructions)]
    return obs, np.zeros((len(obs), spec.horizon, spec.action_dim))


def test_attention_is_a_distribution_over_the_context_and_the_goal_words_are_found(tiny_policy):
    wa = bench_module("word_attention")
    obs, targets = vln_batch(tiny_policy, ["go to the red box", "go to the blue sphere"])
    attention, mask = wa.cross_attention(tiny_policy, obs, targets)
    torch.testing.assert_close(attention.sum(-1), torch.ones(len(obs)))
    assert float(attention[~mask].abs().sum()) == 0.0
    assert all(not blk.cross_q._forward_hooks for blk in tiny_policy.decoder.blocks)

    tok = tiny_policy.backbone.tokenizer
    a, b = (tok(t, return_tensors="pt")["input_ids"][0]
            for t in ("Instruction: go to the red box\n", "Instruction: go to the blue box\n"))
    span = wa.goal_span(a, b)
    assert "red" in tok.decode(a[span]) and "box" not in tok.decode(a[span])

    r = wa.goal_word_attention(tiny_policy, obs, targets,
                               {"go to the red box": "go to the green cylinder",
                                "go to the blue sphere": "go to the red box"}.get)
    assert 0.0 < r["goal_words"] < 1.0 and 0.0 < r["uniform"] < 0.1
