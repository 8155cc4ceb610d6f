"""The policy model: shapes, determinism, prompt conditioning, prefix conditioning, learning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import camera_images

from qwen_vla_ros.model.normalize import NormStats
from qwen_vla_ros.model.policy import Observation, QwenVLAPolicy
from qwen_vla_ros.model.presets import count_parameters


def obs_for(policy, embodiment: str, seed: int = 0, instruction: str = "transfer the cube"):
    spec = policy.spec(embodiment)
    state = (spec.lower() + spec.upper())[[spec.action_names.index(s) for s in spec.state]] / 2
    return Observation(images=camera_images(spec, seed), state=state, instruction=instruction,
                       embodiment=embodiment)


@pytest.mark.parametrize("embodiment", ["aloha", "vx300s_single", "vln"])
def test_chunk_shape_and_finite_for_each_layout(tiny_policy, embodiment):
    spec = tiny_policy.spec(embodiment)
    chunk = tiny_policy.predict(obs_for(tiny_policy, embodiment), seed=1)
    assert chunk.actions.shape == (spec.horizon, spec.action_dim)
    assert np.all(np.isfinite(chunk.actions))
    assert chunk.dt == pytest.approx(1.0 / spec.control_rate_hz)
    assert set(chunk.timing_ms) == {"preprocess", "backbone", "decoder", "total"}


def test_same_seed_same_chunk_different_seed_different(tiny_policy):
    obs = obs_for(tiny_policy, "aloha")
    a = tiny_policy.predict(obs, seed=7).actions
    b = tiny_policy.predict(obs, seed=7).actions
    c = tiny_policy.predict(obs, seed=8).actions
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_images_change_the_chunk_and_each_camera_counts(tiny_policy):
    """Same state, prompt and seed: other pixels give another chunk, also when only one of
    the four cameras changes (each camera reaches the decoder)."""
    obs = obs_for(tiny_policy, "aloha", seed=0)
    a = tiny_policy.predict(obs, seed=3).actions
    other = dataclasses.replace(obs, images=camera_images(tiny_policy.spec("aloha"), seed=1))
    assert np.abs(tiny_policy.predict(other, seed=3).actions - a).max() > 1e-4
    for cam in tiny_policy.spec("aloha").cameras:
        images = dict(obs.images)
        images[cam] = 255 - images[cam]
        one = dataclasses.replace(obs, images=images)
        assert np.abs(tiny_policy.predict(one, seed=3).actions - a).max() > 1e-5, cam


def test_a_batch_conditions_each_sample_as_alone(tiny_policy):
    """Training runs one backbone pass per batch; prompts of different lengths are padded.
    Every sample's hidden states and loss must be what it gets alone."""
    obs = [obs_for(tiny_policy, "aloha", seed=0, instruction="transfer the cube"),
           obs_for(tiny_policy, "aloha", seed=1,
                   instruction="pick up the red cube and hand it to the other arm")]
    hidden, mask = tiny_policy.features(obs)
    assert mask[0].sum() < mask[1].sum()  # the first was padded
    for i, o in enumerate(obs):
        alone, alone_mask = tiny_policy.features(o)
        n = int(alone_mask.sum())
        assert int(mask[i].sum()) == n
        torch.testing.assert_close(hidden[i, :n], alone[0], rtol=1e-4, atol=1e-4)
    spec = tiny_policy.spec("aloha")
    actions = np.random.default_rng(0).uniform(spec.lower(), spec.upper(), (2, spec.horizon,
                                                                            spec.action_dim))
    with torch.no_grad():
        assert np.isfinite(float(tiny_policy.loss(obs, actions)))
    with pytest.raises(ValueError, match="2 observations but 1"):
        tiny_policy.loss(obs, actions[:1])


def test_a_body_with_its_own_image_pixels_sees_smaller_frames(tiny_policy):
    """One checkpoint, a body capped below the model's image_pixels (train
    --image-pixels-of): its frames are resized to the cap inside predict and features (fewer
    image tokens; a frame given at the capped size gives the same chunk), and the other
    bodies are untouched."""
    from qwen_vla_ros.model.preprocess import capped_rule, fit_frame

    saved = dict(tiny_policy.embodiments)
    obs = obs_for(tiny_policy, "vln", seed=2, instruction="go to the red box")
    arm = obs_for(tiny_policy, "aloha", seed=2)
    full_tokens = int(tiny_policy.features(obs)[1].sum())
    arm_chunk = tiny_policy.predict(arm, seed=5).actions
    try:
        cap = 64 * 80
        tiny_policy.embodiments["vln"] = tiny_policy.spec("vln").with_image_pixels(cap)
        rule = capped_rule(tiny_policy.backbone.pixels.resize_rule, cap)
        small = dataclasses.replace(obs, images={c: fit_frame(f, rule)
                                                 for c, f in obs.images.items()})
        assert small.images["front"].shape[0] * small.images["front"].shape[1] <= cap
        assert int(tiny_policy.features(obs)[1].sum()) < full_tokens
        np.testing.assert_array_equal(tiny_policy.predict(obs, seed=5).actions,
                                      tiny_policy.predict(small, seed=5).actions)
        np.testing.assert_array_equal(tiny_policy.predict(arm, seed=5).actions, arm_chunk)
    finally:
        tiny_policy.embodiments.clear()
        tiny_policy.embodiments.update(saved)
    assert int(tiny_policy.features(obs)[1].sum()) == full_tokens


def test_embodiment_prompt_changes_the_chunk(tiny_policy):
    """Two embodiments identical but for the prompt text: the prompt alone must move the chunk."""
    aloha = tiny_policy.spec("aloha")
    other = dataclasses.replace(aloha, name="aloha_b",
                                prompt="Embodiment: a different bimanual rig, mirrored arms.")
    specs = {"aloha": aloha, "aloha_b": other}
    policy = QwenVLAPolicy(tiny_policy.backbone, tiny_policy.decoder, tiny_policy.config,
                           specs, NormStats.from_limits(specs))
    obs = obs_for(tiny_policy, "aloha")
    a = policy.predict(obs, seed=3).actions
    b = policy.predict(dataclasses.replace(obs, embodiment="aloha_b"), seed=3).actions
    assert np.abs(a - b).max() > 1e-4


def test_prefix_is_reproduced_and_conditions_the_rest(tiny_policy):
    obs = obs_for(tiny_policy, "aloha")
    spec = tiny_policy.spec("aloha")
    rng = np.random.default_rng(0)
    prefix = rng.uniform(spec.lower(), spec.upper(), size=(10, spec.action_dim))
    chunk = tiny_policy.predict(obs, seed=5, prefix=prefix).actions
    # Stated tolerance: 1e-6 in embodiment units (rad / normalised gripper).
    np.testing.assert_allclose(chunk[:10], prefix, atol=1e-6, rtol=0)
    other = tiny_policy.predict(obs, seed=5, prefix=prefix[::-1].copy()).actions
    assert np.abs(chunk[10:] - other[10:]).max() > 1e-5, "prefix does not reach the rest"


def test_soft_guidance_leaves_the_previous_plan_gradually(tiny_policy):
    """RTC soft guidance: right after the prefix the chunk stays near what the previous chunk
    planned, further on it is the model's own (weights decay to 0); a bad guide is refused."""
    obs = obs_for(tiny_policy, "aloha")
    spec = tiny_policy.spec("aloha")
    rng = np.random.default_rng(1)
    mid = (spec.lower() + spec.upper()) / 2
    prefix = np.tile(mid, (5, 1))
    guide = rng.uniform(spec.lower(), spec.upper(), size=(20, spec.action_dim))
    free = tiny_policy.predict(obs, seed=5, prefix=prefix).actions
    guided = tiny_policy.predict(obs, seed=5, prefix=prefix, guide=guide).actions
    np.testing.assert_allclose(guided[:5], prefix, atol=1e-6, rtol=0)  # the prefix as held
    span = spec.upper() - spec.lower()
    near = np.abs(guided[5:8] - guide[:3]) / span
    assert near.max() < 0.1 < (np.abs(free[5:8] - guide[:3]) / span).max()
    # Past the 20 guided steps the weights are 0, but the model still saw the guided steps:
    # the chunk differs there too (the guidance conditions, it does not merely overwrite).
    assert np.abs(guided[30:] - free[30:]).max() > 1e-5
    with pytest.raises(ValueError, match="guide"):
        tiny_policy.predict(obs, seed=5, prefix=prefix, guide=guide[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        tiny_policy.predict(obs, seed=5, prefix=prefix, guide=np.full_like(guide, np.nan))


def test_bad_observations_raise_clear_errors(tiny_policy):
    obs = obs_for(tiny_policy, "aloha")
    with pytest.raises(ValueError, match="NaN"):
        tiny_policy.predict(dataclasses.replace(obs, state=np.full(14, np.nan)))
    with pytest.raises(ValueError, match="expects a state of 14"):
        tiny_policy.predict(dataclasses.replace(obs, state=np.zeros(3)))
    with pytest.raises(ValueError, match="instruction is empty"):
        tiny_policy.predict(dataclasses.replace(obs, instruction="  "))
    with pytest.raises(KeyError, match="cam_low"):
        images = dict(obs.images)
        del images["cam_low"]
        tiny_policy.predict(dataclasses.replace(obs, images=images))
    with pytest.raises(Exception, match="unknown embodiment 'spot'"):
        tiny_policy.predict(dataclasses.replace(obs, embodiment="spot"))


def test_decoder_learns_a_fixed_batch(tiny_policy):
    """Overfitting a small fixed batch cuts the flow-matching loss by >= 10x.

    The batch is fixed whole: observations, target chunks, and each sample's noise and flow
    time (a per-sample generator reseeded every pass)."""
    torch.manual_seed(0)
    from qwen_vla_ros.model.dit import ActionDecoder

    decoder = ActionDecoder(tiny_policy.decoder.cfg)
    policy = QwenVLAPolicy(tiny_policy.backbone, decoder, tiny_policy.config,
                           tiny_policy.embodiments, tiny_policy.norm_stats)
    spec = policy.spec("aloha")
    rng = np.random.default_rng(0)
    batch = []
    for i in range(4):
        obs = obs_for(policy, "aloha", seed=i, instruction=f"task number {i}")
        t = np.linspace(0, 1, spec.horizon)[:, None]
        start = rng.uniform(-0.5, 0.5, spec.action_dim)
        target = np.clip(start + 0.5 * np.sin(2 * np.pi * t + i), spec.lower(), spec.upper())
        with torch.no_grad():
            feats = policy.features(obs)
        batch.append((obs, target, feats))
    opt = torch.optim.AdamW(decoder.parameters(), lr=2e-3)
    def epoch_loss(train: bool) -> float:
        total = 0.0
        for i, (obs, target, feats) in enumerate(batch):
            gen = torch.Generator().manual_seed(i)
            loss = policy.loss(obs, target, generator=gen, features=feats)
            if train:
                opt.zero_grad()
                loss.backward()
                opt.step()
            total += float(loss.detach())
        return total / len(batch)

    with torch.no_grad():
        first = epoch_loss(False)
    for _ in range(150):
        epoch_loss(True)
    with torch.no_grad():
        last = epoch_loss(False)
    assert last < first / 10, f"loss {first:.3f} -> {last:.3f}"


def test_full_preset_is_4b_plus_1_15b_shaped():
    counts = count_parameters("full")
    assert 4.0e9 <= counts["backbone"] <= 5.0e9, counts
    assert 1.10e9 <= counts["decoder"] <= 1.20e9, counts


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_bf16_on_gpu(tiny_checkpoint):
    policy = QwenVLAPolicy.from_pretrained(tiny_checkpoint, device="cuda", dtype="bfloat16")
    chunk = policy.predict(obs_for(policy, "aloha"), seed=0)
    assert np.all(np.isfinite(chunk.actions))


def test_layout_cache_reuses_positions_and_replans_a_new_layout(tiny_policy):
    """The rope positions and tokens of one observation's layout are computed once: reused
    they give the hidden states the model computes itself; another aspect (token grid) or
    instruction is a new layout (planned, not mis-indexed)."""
    bb = tiny_policy.backbone
    spec = tiny_policy.spec("aloha")
    obs = obs_for(tiny_policy, "aloha")
    images, order = obs.camera_inputs(spec.cameras)
    square = {k: v[:, :v.shape[0]].copy() for k, v in images.items()}  # another token grid
    cases = [(images, "a layout of this test"), (square, "a layout of this test"),
             (images, "another layout of this test")]
    with torch.inference_mode():
        for imgs, instruction in cases:
            inputs = bb.prepare(imgs, order, spec.prompt, instruction)
            before = bb.layouts
            cached, _ = bb(inputs)  # plans this layout (first time) ...
            again, _ = bb(bb.prepare(imgs, order, spec.prompt, instruction))  # ... reuses it
            assert bb.layouts == before + 1, "a layout planned twice, or never"
            moved = {k: v.to(torch.float32) if k == "pixel_values" else v
                     for k, v in inputs.items()}
            reference = bb.model(**moved, use_cache=False).last_hidden_state  # its own rope
            torch.testing.assert_close(cached, reference)
            torch.testing.assert_close(again, reference)
    # training (autograd) never sees the inference-mode caches
    loss = tiny_policy.loss(obs, np.zeros((spec.horizon, spec.action_dim)))
    loss.backward()
    tiny_policy.zero_grad()


def test_compiled_inference_equals_eager_and_falls_back_when_it_fails(tiny_checkpoint):
    """The flow step captures as one graph (fullgraph: no host sync inside) and the
    language model compiles; chunks equal eager ones. ``aot_eager`` traces as inductor does
    without generating kernels (bench/gpu.sh runs inductor on the GPU). A compiler that
    fails: eager chunks, the reason kept and logged once."""
    policy = QwenVLAPolicy.from_pretrained(tiny_checkpoint)  # its own copy: compiling mutates
    obs = obs_for(policy, "aloha")
    spec = policy.spec("aloha")
    prefix = np.tile((spec.lower() + spec.upper()) / 2, (4, 1))
    eager = [policy.predict(obs, seed=3).actions, policy.predict(obs, seed=3, prefix=prefix)
             .actions]
    policy.compile_for_inference(backend="aot_eager")
    compiled = [policy.predict(obs, seed=3).actions,
                policy.predict(obs, seed=3, prefix=prefix).actions]
    for a, b in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert policy.compiled and policy.compile_error == ""
    assert policy.backbone.compile_error == ""

    def broken(gm, example_inputs):
        raise RuntimeError("no compiler on this machine")

    said = []
    policy.compile_for_inference(backend=broken, log=said.append)
    again = policy.predict(obs, seed=3).actions
    np.testing.assert_allclose(again, eager[0], atol=1e-5, rtol=1e-5)
    assert not policy.compiled and "no compiler on this machine" in policy.compile_error
    assert "no compiler on this machine" in policy.backbone.compile_error
    assert len(said) == 2  # flow step and language model, once each
    policy.predict(obs, seed=4)
    assert len(said) == 2


def test_training_with_committed_prefixes_scores_only_the_free_steps(tiny_policy):
    """Real-time chunking at run time continues a committed prefix, so training gives samples
    one (per-sample lengths): the prefix steps are clean context, never scored."""
    spec = tiny_policy.spec("aloha")
    obs = [obs_for(tiny_policy, "aloha", seed=s) for s in (0, 1)]
    actions = np.random.default_rng(0).uniform(spec.lower(), spec.upper(),
                                               (2, spec.horizon, spec.action_dim))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        mixed = tiny_policy.loss(obs, actions, prefix_len=torch.tensor([0, 10]), generator=gen)
        assert np.isfinite(float(mixed)) and float(mixed) > 0
        everything = torch.tensor([spec.horizon, spec.horizon])
        assert float(tiny_policy.loss(obs, actions, prefix_len=everything)) == 0.0


def test_one_compiled_flow_step_serves_every_step_count_and_prefix(tiny_checkpoint):
    """The flow step is compiled once: 10 and 4 flow steps, with and without committed
    prefixes of two lengths, all run the same graph (no recompiling per step count or per
    prefix, which made the unrolled loop's compile grow with the steps) and equal eager."""
    policy = QwenVLAPolicy.from_pretrained(tiny_checkpoint)
    obs = obs_for(policy, "aloha")
    spec = policy.spec("aloha")
    mid = (spec.lower() + spec.upper()) / 2
    cases = [dict(steps=10), dict(steps=4), dict(steps=10, prefix=np.tile(mid, (4, 1))),
             dict(steps=4, prefix=np.tile(mid, (7, 1))),
             dict(steps=10, prefix=np.tile(mid, (4, 1)), guide=np.tile(spec.upper(), (9, 1)))]
    eager = [policy.predict(obs, seed=5, **c).actions for c in cases]
    graphs = []

    def counting(gm, example_inputs):  # a real backend: runs the captured graph as traced
        graphs.append(gm)
        return gm.forward

    policy.compile_for_inference(backend=counting, backbone=False)
    compiled = [policy.predict(obs, seed=5, **c).actions for c in cases]
    for a, b in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert len(graphs) == 1 and policy.compile_error == ""


def test_cpu_run_with_gpu_only_linear_attention_kernels_is_a_clear_error(tiny_policy,
                                                                         monkeypatch):
    """With flash-linear-attention importable, transformers routes Qwen3.5's linear attention
    to fla's Triton kernels on every device, and a CPU run failed deep inside Triton (seen on
    an H200 machine). The package's presence is simulated here (it is GPU-only); the policy
    refuses by name instead, and works again once it is gone."""
    import importlib.machinery
    import sys
    import types

    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.model.backbone import gpu_only_kernels

    obs = obs_for(tiny_policy, "aloha")
    for name in ("fla", "fla.ops", "fla.ops.gated_delta_rule"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    gpu_only_kernels.cache_clear()
    try:
        with pytest.raises(ConfigError, match="flash-linear-attention"):
            tiny_policy.predict(obs, seed=0)
    finally:
        monkeypatch.undo()
        gpu_only_kernels.cache_clear()
    assert tiny_policy.predict(obs, seed=0).actions.shape[0] > 0


def test_an_instruction_first_prompt_lets_the_image_tokens_read_it(tiny_policy, tmp_path):
    """Every layer is causal: with the instruction after the images (the default, every
    earlier checkpoint's layout) the image tokens' hidden states cannot depend on it; with
    ``instruction_first`` they do. The cached layout equals the model's own positions either
    way, and the policy's training and inference paths both use its configured layout, which
    a saved checkpoint keeps."""
    bb = tiny_policy.backbone
    spec = tiny_policy.spec("vln")
    obs = obs_for(tiny_policy, "vln", instruction="go to the red box")
    images, order = obs.camera_inputs(spec.cameras)
    image_id = bb.ids["image_token_id"]
    with torch.inference_mode():
        at_images = {}
        for first in (False, True):
            for words in ("go to the red box", "go to the blue box"):
                inputs = bb.prepare(images, order, spec.prompt, words, first)
                hidden, _ = bb(inputs)
                moved = {k: v.to(torch.float32) if k == "pixel_values" else v
                         for k, v in inputs.items()}
                torch.testing.assert_close(
                    hidden, bb.model(**moved, use_cache=False).last_hidden_state)
                at_images[first, words] = hidden[inputs["input_ids"] == image_id]
    torch.testing.assert_close(at_images[False, "go to the red box"],
                               at_images[False, "go to the blue box"], rtol=0, atol=0)
    assert (at_images[True, "go to the red box"]
            - at_images[True, "go to the blue box"]).abs().max() > 1e-3

    policy = QwenVLAPolicy(bb, tiny_policy.decoder,
                           dataclasses.replace(tiny_policy.config, instruction_first=True),
                           tiny_policy.embodiments, tiny_policy.norm_stats)
    with torch.inference_mode():
        trained_on, _ = policy.features(obs)
        own, _ = bb(bb.prepare(images, order, spec.prompt, obs.instruction, True))
    torch.testing.assert_close(trained_on, own)
    moved = policy.predict(obs, seed=3).actions
    assert np.abs(moved - tiny_policy.predict(obs, seed=3).actions).max() > 1e-4
    policy.save_pretrained(tmp_path / "first")
    again = QwenVLAPolicy.from_pretrained(tmp_path / "first")
    assert again.config.instruction_first
    np.testing.assert_allclose(again.predict(obs, seed=3).actions, moved, atol=1e-5)


def test_a_prompt_summary_policy_is_saved_loaded_and_trains_its_new_weights(tmp_path):
    """``prompt_summary``: the decoder's extra weights draw after every other one (the rest of
    a seed's model is unchanged), get gradients from the loss, and a saved checkpoint keeps
    the option and its predictions."""
    from qwen_vla_ros.model.presets import build_preset

    plain = build_preset("tiny", ["vln"], seed=3)
    summed = build_preset("tiny", ["vln"], seed=3, prompt_summary=True)
    assert summed.decoder.cfg.prompt_summary and summed.decoder.summary_in is not None
    extra = {k for k in summed.state_dict() if k.startswith("decoder.summary_in.")}
    assert extra and set(summed.state_dict()) - extra == set(plain.state_dict())
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(summed.state_dict()[name], value, rtol=0, atol=0)
    obs = obs_for(summed, "vln", instruction="go to the red box")
    target = np.zeros((summed.spec("vln").horizon, summed.spec("vln").action_dim))
    summed.loss([obs, obs], np.stack([target, target])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in summed.decoder.summary_in.parameters())
    summed.zero_grad()
    chunk = summed.predict(obs, seed=2).actions
    summed.save_pretrained(tmp_path / "s")
    again = QwenVLAPolicy.from_pretrained(tmp_path / "s")
    assert again.decoder.cfg.prompt_summary
    np.testing.assert_allclose(again.predict(obs, seed=2).actions, chunk, atol=1e-5)
