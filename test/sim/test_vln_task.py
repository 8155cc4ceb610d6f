"""vln_goto: episodes, the language that names the goal, success and SPL, and the scripted
demonstrator driving the base sim's room (MuJoCo, no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.runtime.navigation import Pose2D
from qwen_vla_ros.sim.base import OBJECTS, BaseSim, horizontal_fov
from qwen_vla_ros.sim.vln_task import (
    COLOURS,
    MIN_START_DISTANCE,
    TIME_LIMIT,
    VIEW_MARGIN,
    ScriptedNavigator,
    footprint_distance,
    free,
    in_view,
    language_figures,
    named_object,
    plan_path,
    reworded,
    sample_detour,
    sample_episode,
    spl,
    start_clearance,
    succeeded,
    success_by_start,
)


def test_the_instruction_names_the_goal_by_colour():
    assert named_object("go to the red box") is COLOURS["red"]
    assert named_object("Head to the YELLOW one.") is COLOURS["yellow"]
    assert named_object("find the blue sphere and stop next to it") is COLOURS["blue"]
    assert named_object("go to the kitchen") is None  # names no known object
    assert named_object("go from red to green") is None  # names two


def test_episodes_are_seeded_free_and_not_trivial():
    for seed in range(50):
        ep = sample_episode(seed)
        assert ep == sample_episode(seed)
        assert free(ep.start.x, ep.start.y)
        assert footprint_distance(ep.start.x, ep.start.y, ep.target) >= MIN_START_DISTANCE
        assert named_object(ep.instruction) is ep.target
    assert len({sample_episode(s).target.name for s in range(50)}) == len(OBJECTS)


def test_swapping_the_colour_keeps_the_start():
    """The language check: one start, each colour named in turn."""
    eps = [sample_episode(7, colour=c) for c in COLOURS]
    assert len({e.start for e in eps}) == 1
    assert [e.target for e in eps] == list(COLOURS.values())


def test_a_run_of_episodes_cycles_colours_at_each_start():
    from qwen_vla_ros.sim.vln_task import episode_at, parse_colours

    assert episode_at(3, 2) == sample_episode(5)
    colours = parse_colours(" Red, yellow ")
    assert colours == ("red", "yellow")
    run = [episode_at(3, k, colours) for k in range(4)]
    assert [e.seed for e in run] == [3, 3, 4, 4]
    assert [e.target.name for e in run] == ["red_box", "yellow_box"] * 2
    assert run[0].start == run[1].start != run[2].start
    with pytest.raises(ValueError, match="unknown colour"):
        parse_colours("red,pink")


def test_starts_beside_an_object_name_each_other_colour():
    """collect --colours --beside: each start lies beside one of the colours' objects (within
    MIN_START_DISTANCE of its footprint) and clear of the rest, and is named once with each
    other colour -- as most evaluation starts begin beside an object that is not the goal."""
    from qwen_vla_ros.sim.vln_task import episode_at, episodes_in_run, parse_colours

    colours = parse_colours("red,green,blue,yellow")
    starts = 40
    run = [episode_at(500, k, colours, beside=True)
           for k in range(episodes_in_run(starts, colours, beside=True))]
    assert len(run) == starts * 3 and run == [episode_at(500, k, colours, beside=True)
                                              for k in range(len(run))]
    neighbours = set()
    for i in range(starts):
        eps = run[3 * i:3 * i + 3]
        assert {e.seed for e in eps} == {500 + i} and len({e.start for e in eps}) == 1
        s = eps[0].start
        assert free(s.x, s.y)
        near = [o for o in OBJECTS if footprint_distance(s.x, s.y, o) < MIN_START_DISTANCE]
        assert len(near) == 1 and near[0] not in {e.target for e in eps}
        assert len({e.target.name for e in eps}) == 3
        assert all(named_object(e.instruction) is e.target for e in eps)
        neighbours.add(near[0].name)
    assert len(neighbours) == len(OBJECTS)
    pair = [episode_at(9, k, ("red", "blue"), beside=True) for k in range(20)]
    assert {e.seed for e in pair} == set(range(9, 29))  # one episode a start: the other colour
    assert all(min(footprint_distance(e.start.x, e.start.y, COLOURS[c]) for c in ("red", "blue")
                   if c != e.target.colour) < MIN_START_DISTANCE for e in pair)
    assert {e.target.colour for e in pair} == {"red", "blue"}
    with pytest.raises(ValueError, match="two or more colours"):
        episode_at(0, 0, ("red",), beside=True)


def test_each_failure_is_named_by_what_went_wrong():
    from qwen_vla_ros.sim.vln_task import FAILURE_KINDS, failure_kind, failure_kinds

    def row(**kw):
        base = {"success": False, "stopped": True, "path_m": 2.0, "reached": None,
                "target": "red_box", "collisions": 0, "distance_to_target_m": 2.5,
                "names_known_object": True}
        return {**base, **kw}

    rows = [row(success=True, distance_to_target_m=0.3, reached="red_box"),
            row(path_m=0.0, distance_to_target_m=4.1),       # called it reached at once
            row(path_m=0.05, reached="blue_sphere"),          # moved too little: at start
            row(reached="blue_sphere"),
            row(stopped=False, collisions=3),
            row(collisions=3, distance_to_target_m=0.7),
            row(distance_to_target_m=0.7),
            row(),
            row(names_known_object=False, path_m=0.0)]        # not judged
    assert [failure_kind(r) for r in rows[:8]] == [None, "stopped_at_start", "stopped_at_start",
                                                   "stopped_at_another_object",
                                                   "ran_out_of_time", "collided",
                                                   "stopped_short", "stopped_elsewhere"]
    counts = failure_kinds(rows)
    assert list(counts) == list(FAILURE_KINDS)
    assert counts == {"stopped_at_start": 2, "stopped_at_another_object": 1,
                      "ran_out_of_time": 1, "collided": 1, "stopped_short": 1,
                      "stopped_elsewhere": 1}


def drive(ep, dt=0.1, search=False, log=None, detour=None):
    sim = BaseSim(image_size=(16, 16), start=ep.start)
    nav = ScriptedNavigator(ep, search=search, detour=detour)
    travelled, bumped, stop, p = 0.0, False, False, ep.start
    while sim.time < TIME_LIMIT and not stop:
        searching = nav.searching
        v, w, stop = nav.step(sim.pose, dt)
        if log is not None:
            log.append((searching, nav.searching, sim.pose, v, w, nav.detouring))
        if not stop:
            q = sim.step(v, w, dt)
            bumped |= sim.bumped
            travelled += math.hypot(q.x - p.x, q.y - p.y)
            p = q
    sim.close()
    return sim, nav, travelled, bumped, stop


def test_the_scripted_navigator_reaches_the_named_object_without_touching_anything():
    for seed in range(30):
        ep = sample_episode(seed)
        sim, nav, travelled, bumped, stop = drive(ep)
        assert not bumped, seed
        assert succeeded(sim.pose, ep.target, stop, bumped, sim.time), (seed, sim.pose)
        assert spl(True, nav.shortest, travelled) >= 0.9, seed
    # success needs the stop, the region, the clock and no bump
    ep = sample_episode(0)
    sim, *_ = drive(ep)
    assert not succeeded(sim.pose, ep.target, False, False, sim.time)
    assert not succeeded(sim.pose, ep.target, True, True, sim.time)
    assert not succeeded(sim.pose, ep.target, True, False, TIME_LIMIT + 1)
    assert not succeeded(ep.start, ep.target, True, False, 1.0)


def test_the_searching_navigator_turns_left_until_it_sees_the_object_then_goes():
    """search=True: from a start that does not show the named object the demonstrator turns
    left in place (no driving) until it is in view, then plans from there and reaches it as
    the planner does; from a start that shows it, it goes at once."""
    searched = 0
    for seed in range(30):
        ep = sample_episode(seed)
        log = []
        sim, nav, travelled, bumped, stop = drive(ep, search=True, log=log)
        assert not bumped, seed
        assert succeeded(sim.pose, ep.target, stop, bumped, sim.time), (seed, sim.pose)
        assert spl(True, nav.shortest, travelled) >= 0.85, seed
        turning = [r for r in log if r[0] and r[1]]
        assert all(v == 0.0 and w > 0.0 for _, _, _, v, w, _ in turning), seed
        assert all(not in_view(pose, ep.target) for _, _, pose, *_ in turning), seed
        ended = next(r for r in log if not r[1])  # the first step after the search
        assert in_view(ended[2], ep.target) or nav.searched >= 2 * math.pi, seed
        assert bool(turning) != in_view(ep.start, ep.target), seed
        searched += bool(turning)
    assert 10 <= searched < 30  # most starts do not show the object; some do


def test_detours_are_seeded_and_take_the_share_asked_for():
    assert all(sample_detour(s, 0.0) is None for s in range(50))
    assert all(sample_detour(s, 1.0) is not None for s in range(50))
    half = [sample_detour(s, 0.5) for s in range(200)]
    assert 70 <= sum(d is not None for d in half) <= 130
    assert half == [sample_detour(s, 0.5) for s in range(200)]
    assert sample_detour(3, 1.0) != sample_detour(4, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_detour(0, 1.5)


@pytest.mark.parametrize("search", [False, True])
def test_a_pushed_navigator_drives_the_detour_once_then_recovers_without_touching_anything(
        search):
    """Recovery data: the demonstrator drives the seeded arc once, for at most its seconds,
    never close to a wall or object, then reaches the named object as before (the searching
    one turns to find it again when the push turned it away)."""
    dt, pushed, searched_again = 0.1, 0, 0
    for seed in range(30):
        ep, d = sample_episode(seed), sample_detour(seed, 1.0)
        log = []
        sim, nav, _, bumped, stop = drive(ep, dt=dt, search=search, log=log, detour=d)
        assert not bumped, seed
        assert succeeded(sim.pose, ep.target, stop, bumped, sim.time), (seed, sim.pose)
        on = [i for i, r in enumerate(log) if r[5]]
        if not on:  # never clear of walls and objects where it would have started
            assert nav.detour == d, seed
            continue
        pushed += 1
        assert nav.detour is None, seed
        assert on == list(range(on[0], on[-1] + 1)), seed  # one push, in one piece
        assert len(on) <= math.ceil(d.seconds / dt), seed
        assert all((r[3], r[4]) == (d.v, d.w) for r in log[on[0]: on[-1] + 1]), seed
        assert all(free(r[2].x, r[2].y) for r in log[on[0]: on[-1] + 2]), seed
        after = log[on[-1] + 1]
        assert not after[5] and (after[3], after[4]) != (d.v, d.w), seed
        searched_again += after[1]
    assert pushed >= 20
    assert searched_again > 0 if search else searched_again == 0


def test_in_view_agrees_with_the_camera_image():
    """The geometry the searching demonstrator uses against what MuJoCo renders: the red box
    straight ahead, just inside the view and just outside it."""
    red = COLOURS["red"]
    sim = BaseSim(image_size=(120, 160))
    half = horizontal_fov((120, 160)) / 2

    def red_pixels(yaw_offset):
        pose = Pose2D(0.0, 0.0, math.atan2(red.y, red.x) + yaw_offset)
        sim.reset(pose)
        img = sim.render().astype(int)
        return pose, int(np.sum((img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)))

    for offset, visible in ((0.0, True), (half - VIEW_MARGIN - 0.05, True),
                            (-(half - VIEW_MARGIN - 0.05), True), (half + 0.35, False),
                            (math.pi, False)):
        pose, n = red_pixels(offset)
        assert in_view(pose, red, (120, 160)) == visible, offset
        assert (n > 20) == visible, (offset, n)
    sim.close()


def test_spl_and_unplannable_starts():
    assert spl(True, 2.0, 4.0) == 0.5 and spl(False, 2.0, 2.0) == 0.0
    o = OBJECTS[0]
    with pytest.raises(ValueError, match="not free"):
        plan_path(Pose2D(o.x, o.y, 0.0), OBJECTS[1])


def test_language_figures_tell_ignored_words_from_followed_ones():
    """Two starts x four colours: from the first the base stops at the blue sphere whatever
    is named (the words ignored), from the second at each named object but the yellow one
    (bumped into it: not a success, though it stopped there)."""
    colours = ("red", "green", "blue", "yellow")
    rows = []
    for seed, goes_to in ((11000, lambda c: "blue"), (11001, lambda c: c)):
        for colour in colours:
            ep = sample_episode(seed, colour=colour)
            reached = next(o.name for o in OBJECTS if o.colour == goes_to(colour))
            bumped = seed == 11001 and colour == "yellow"
            rows.append({"seed": seed, "target": ep.target.name, "reached": reached,
                         "success": reached == ep.target.name and not bumped,
                         "names_known_object": True})
    rows.append({"seed": 11002, "target": "red_box", "reached": None, "success": False,
                 "names_known_object": False})  # not the check's: left out
    fig = language_figures(rows)
    blue = next(o.name for o in OBJECTS if o.colour == "blue")
    assert fig["episodes"] == 8 and fig["reached_instructed"] == 1 + 3
    assert fig["share"] == 0.5 and fig["chance"] == 0.25
    assert fig["objects_per_start"] == {"11000": 1, "11001": 4}
    for o in OBJECTS:
        row = fig["reached_by_instruction"][o.name]
        assert row.get(blue, 0) >= 1 and row.get(o.name, 0) == 1 + (o.name == blue)


def test_rewording_names_another_object_in_the_same_words():
    red, green = COLOURS["red"], COLOURS["green"]
    for seed in range(20):
        ep = sample_episode(seed, colour="red")
        text = reworded(ep.instruction, green)
        assert named_object(text) is green
        assert text.split()[:2] == ep.instruction.split()[:2]  # the template's own words
    assert reworded("go to the red box", red) == "go to the red box"
    assert reworded("go to the red box", green) == "go to the green cylinder"
    assert reworded("please go near the red box", green) is None  # no template's words
    assert reworded("go to the kitchen", green) is None  # names no object


def test_success_split_by_whether_the_start_is_beside_another_object():
    """vln_goto's starts keep MIN_START_DISTANCE from the named object only; the language
    check's from every object. The eval splits its successes by that."""
    red, green = COLOURS["red"], COLOURS["green"]
    beside_green = (green.x + green.radius + 0.5, green.y)  # 0.5 m from green's footprint
    assert start_clearance(*beside_green, red.name) == pytest.approx(0.5)
    assert start_clearance(*beside_green, green.name) > MIN_START_DISTANCE  # it is the goal
    for seed in range(11000, 11010):  # the language check's starts: clear of all four
        ep = sample_episode(seed, colour="red")
        assert start_clearance(ep.start.x, ep.start.y, "red_box") >= MIN_START_DISTANCE
    rows = [{"start": [*beside_green, 0.0], "target": red.name, "success": True,
             "names_known_object": True},
            {"start": [*beside_green, 0.0], "target": red.name, "success": False,
             "names_known_object": True},
            {"start": [*beside_green, 0.0], "target": green.name, "success": False,
             "names_known_object": True},  # beside its own goal: clear of the others
            {"start": [0.0, 0.0, 0.0], "target": red.name, "success": True,
             "names_known_object": False}]  # names no object: not counted
    assert success_by_start(rows) == {
        "beside_another_object": {"successes": 1, "episodes": 2},
        "clear_of_all": {"successes": 0, "episodes": 1}}
