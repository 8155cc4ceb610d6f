"""A scripted demonstrator for transfer-cube: stands in for the human at the leader arms.

The plan is written in end-effector space (gripper poses relative to the cube), executed in
gym-aloha's mocap model (weld stiffened, see sim/aloha.py) and recorded as the 14 joint
positions of the arms plus the commanded gripper opening, at 50 Hz. Played back as leader joint
states, the followers reproduce it in the joint-position model.

The right arm picks the cube with its gripper pitched 60 deg down, carries it to a meeting
point above the table centre; the left gripper, rolled 90 deg so its fingers close vertically,
takes it; the right opens and backs off.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.params import param
from qwen_vla_ros.sim.aloha import (
    DT,
    START_ARM,
    fingertip_centre,
    load_model,
    normalised_to_finger,
    sample_object_poses,
)

EPISODE_STEPS = 450


@dataclass
class ScriptedLeaderParams:
    """scripted_leader's parameters (the node declares them from this list)."""

    embodiment: str = param("aloha", "embodiment (its teleop section names the leader arms)")
    start_with_teleop: bool = param(
        True, "play each episode's demonstration from when the mode (topic 'mode') becomes "
              "TELEOP, holding its first pose until then, as a person at the leader waits for "
              "teleop to engage; false: from the episode's start, whatever the mode")


CUBE_REF_FREEZE = 270  # the left plans against the cube as seen before its final approach
MEET = np.array([0.0, 0.5, 0.25])
INIT_LINK = {"left": np.array([-0.31718881, 0.5, 0.29525084]),  # mocap at the start pose
             "right": np.array([0.31718881, 0.49999888, 0.29525084])}


def quat_axis_angle(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    half = np.radians(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * axis])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)


@dataclass(frozen=True)
class Waypoint:
    t: int  # step
    xyz: np.ndarray  # fingertip centre (between the two fingers), world frame
    quat: np.ndarray  # mocap orientation
    grip: float  # normalised opening
    rel_cube: bool = False  # xyz is an offset from the cube (as the demonstrator sees it)


PICK = quat_axis_angle([0, 1, 0], -60)  # right gripper pitched 60 deg down
IDENTITY = np.array([1.0, 0, 0, 0])
PRESENT = IDENTITY  # right gripper level at the handover: fingers on the cube's y faces
RECEIVE = quat_axis_angle([1, 0, 0], 90)  # left gripper rolled: fingers on the z faces
CUBE_REST_Z = 0.02  # cube centre once it has settled on the table
FINGERTIP_GAIN = 0.3  # per-step integral correction of the mocap target
FOREARM_ROLL_SPRING = 20.0  # N m/rad toward 0: one joint solution per pose (see below)
# The tracked point is the centre of the finger geoms; the real tips reach further along the
# fingers, so the grasp point sits above the cube centre or the fingers press it into the table.
GRASP_OFFSET = np.array([0.0, 0.0, 0.015])


def transfer_cube_plan(cube_xyz: np.ndarray, tips0: dict[str, np.ndarray]
                       ) -> dict[str, list[Waypoint]]:
    c = np.array([cube_xyz[0], cube_xyz[1], CUBE_REST_Z]) + GRASP_OFFSET
    up = np.array([0, 0, 1.0])
    out = np.array([1.0, 0, 0])
    take = np.array([-0.015, 0, 0])  # left fingertips just left of the cube centre
    # Slow, with settling holds: the joint-position replay lags fast motions, and a lagging
    # gripper body reaches the cube before the fingertips do.
    right = [
        Waypoint(0, tips0["right"], IDENTITY, 0.0),
        Waypoint(60, c + 0.08 * up, PICK, 1.0),
        Waypoint(90, c + 0.08 * up, PICK, 1.0),
        Waypoint(130, c, PICK, 1.0),
        Waypoint(150, c, PICK, 1.0),
        Waypoint(170, c, PICK, 0.0),
        Waypoint(210, c + 0.1 * up, PICK, 0.0),
        Waypoint(260, MEET, PRESENT, 0.0),
        Waypoint(350, MEET, PRESENT, 0.0),
        Waypoint(370, MEET, PRESENT, 1.0),
        Waypoint(410, MEET + 0.1 * out, PRESENT, 1.0),
        Waypoint(EPISODE_STEPS, MEET + 0.1 * out, PRESENT, 1.0),
    ]
    left = [
        Waypoint(0, tips0["left"], IDENTITY, 0.0),
        Waypoint(140, MEET + take - 0.1 * out, RECEIVE, 1.0),
        Waypoint(270, take - 0.1 * out, RECEIVE, 1.0, rel_cube=True),
        Waypoint(310, take, RECEIVE, 1.0, rel_cube=True),
        Waypoint(340, take, RECEIVE, 0.0, rel_cube=True),
        Waypoint(380, take, RECEIVE, 0.0, rel_cube=True),
        Waypoint(420, take - 0.1 * out, RECEIVE, 0.0, rel_cube=True),
        Waypoint(EPISODE_STEPS, take - 0.1 * out, RECEIVE, 0.0, rel_cube=True),
    ]
    return {"left": left, "right": right}


def interpolate(plan: list[Waypoint], t: int, cube: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, float]:
    def at(w: Waypoint) -> np.ndarray:
        return cube + w.xyz if w.rel_cube else w.xyz

    for a, b in itertools.pairwise(plan):
        if a.t <= t <= b.t:
            s = (t - a.t) / max(b.t - a.t, 1)
            return (at(a) + s * (at(b) - at(a)), slerp(a.quat, b.quat, s),
                    a.grip + s * (b.grip - a.grip))
    last = plan[-1]
    return at(last), last.quat, last.grip


def scripted_transfer_cube(seed: int, steps: int = EPISODE_STEPS) -> np.ndarray:
    """Leader joint trajectory [steps, 14] (embodiment units) for the seeded episode."""
    import mujoco

    # With wrist_angle near 0, forearm_roll and wrist_rotate turn about nearly one axis and
    # the welded arm splits a rotation between them arbitrarily: without the spring, seeds
    # ended with the right forearm_roll at +pi, 0 or -pi (13/17/13 of 43 demonstrations),
    # and a policy cloned from them wound those joints up. The spring makes the split unique:
    # at 3 N m/rad seeds 1000-1029 still grasped with forearm_roll anywhere in -2.58..0.31
    # (two branches; a quadratic fit in the cube position left 0.40 rad unexplained); at 20,
    # seeds 1030-1059 grasp within -0.23..0.23 (0.04 rad unexplained), 28/30 solved.
    model = load_model("bimanual_viperx_end_effector_transfer_cube.xml", fast_render=True,
                       stiff_weld=True, roll_spring=FOREARM_ROLL_SPRING)
    data = mujoco.MjData(model)
    start = np.concatenate([START_ARM, [0.02239, -0.02239]])
    data.qpos[:16] = np.concatenate([start, start])
    box = sample_object_poses("transfer_cube", seed)
    data.qpos[16:23] = box
    for i, side in enumerate(("left", "right")):
        data.mocap_pos[i] = INIT_LINK[side]
        data.mocap_quat[i] = IDENTITY
    closed = normalised_to_finger(0.0)
    data.ctrl[:] = [closed, -closed, closed, -closed]
    mujoco.mj_forward(model, data)
    substeps = max(1, round(DT / model.opt.timestep))
    sides = ("left", "right")

    def tips(side: str) -> np.ndarray:
        return fingertip_centre(data, side)

    plan = transfer_cube_plan(box[:3], {s: tips(s).copy() for s in sides})
    correction = {s: np.zeros(3) for s in sides}
    arm_adr = [int(model.jnt_qposadr[model.joint(f"vx300s_{s}/{j}").id])
               for s in sides
               for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                         "wrist_rotate")]
    out = np.zeros((steps, 14))
    cube_adr = int(model.jnt_qposadr[model.joint("red_box_joint").id])
    cube_ref = data.qpos[cube_adr: cube_adr + 3].copy()
    for t in range(steps):
        if t <= CUBE_REF_FREEZE:
            cube_ref = data.qpos[cube_adr: cube_adr + 3].copy()  # chasing it would push it
        grips = []
        for i, side in enumerate(sides):
            xyz, quat, grip = interpolate(plan[side], t, cube_ref)
            # Steer the mocap so the fingertips, not the welded link, follow the plan.
            correction[side] += FINGERTIP_GAIN * (xyz - tips(side))
            data.mocap_pos[i] = xyz + correction[side]
            data.mocap_quat[i] = quat
            grips.append(grip)
        fl, fr = normalised_to_finger(grips[0]), normalised_to_finger(grips[1])
        data.ctrl[:] = [fl, -fl, fr, -fr]
        mujoco.mj_step(model, data, nstep=substeps)
        arm = data.qpos[arm_adr]
        out[t] = np.concatenate([arm[:6], [grips[0]], arm[6:], [grips[1]]])
    return out
