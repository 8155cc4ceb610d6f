"""vln_goto: a language-guided navigation task in the base sim's room, and its scripted
demonstrator. No ROS.

An episode starts the base at a seeded free pose; the instruction names one of the room's
objects by colour ("go to the red box", or a paraphrase). Success: the base stops within
``SUCCESS_RADIUS`` of the named object's footprint, before the time limit, without touching
anything. SPL (success weighted by path length, Anderson et al. 2018) compares the distance
driven with the shortest collision-free path to the success region.

The demonstrator plans on the known map: A* over a 5 cm grid of the room with walls and
objects inflated by the base's radius plus a margin, to the nearest cell within the approach
distance of the object; the path is shortened where the straight line is free and followed
with the package's pure-pursuit follower (``runtime.follower``), then the base stops.

That demonstrator knows where the object is from the first instant; the policy sees only its
camera, and the room's walls all look alike, so from a start that shows no object the way
the demonstrator turns cannot be told from the images. ``search=True`` makes a demonstrator
a policy can imitate: it first turns left in place until the named object is in the
camera's view (``in_view``), then plans from there.

Recovery data (``Detour``): a demonstrator that is pushed off its path once -- it drives a
seeded arc for about a second -- and then plans again from where it ended up shows states
no clean demonstration visits (off the path, facing away, near the object but beside it)
and what to do there. The push is not a demonstration: the dataset drops the samples whose
targets cover it (``learning/nav_dataset.py``), the recovery after it is kept.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.runtime.follower import FollowerConfig, PurePursuit
from qwen_vla_ros.runtime.navigation import Pose2D, wrap
from qwen_vla_ros.sim.base import (
    BASE_RADIUS,
    CAMERA_X,
    OBJECTS,
    ROOM,
    SceneObject,
    horizontal_fov,
)

SUCCESS_RADIUS = 0.5  # m from the object's footprint to the base centre
APPROACH = 0.3  # m: where the demonstrator stops, inside the success region
TIME_LIMIT = 60.0  # s of sim time
MIN_START_DISTANCE = 1.5  # m from the named object's footprint: never a trivial episode
GRID = 0.05  # m per planning cell
MARGIN = 0.08  # m of clearance beyond the base radius
SEARCH_RATE = 0.8  # rad/s: the searching demonstrator's turn (left)
VIEW_MARGIN = math.radians(10)  # in view: this far inside the image's left and right edges
DETOUR_CLEARANCE = 0.15  # m: a detour keeps the planner's clearance plus this from walls and
DETOUR_LOOKAHEAD_S = 0.6  # objects along this much of its arc ahead (s), or it ends

COLOURS = {o.colour: o for o in OBJECTS}  # red, green, blue, yellow
TEMPLATES = ("go to the {colour} {shape}", "navigate to the {colour} {shape}",
             "find the {colour} {shape} and stop next to it", "head to the {colour} one",
             "drive over to the {colour} {shape}")


def shape_word(o: SceneObject) -> str:
    return o.name.split("_", 1)[1]


@dataclass(frozen=True)
class VlnEpisode:
    seed: int
    start: Pose2D
    target: SceneObject
    instruction: str


def named_object(text: str) -> SceneObject | None:
    """The object an instruction names by colour, or None when it names none (or two)."""
    words = {w.strip(".,!?").lower() for w in text.split()}
    named = [o for colour, o in COLOURS.items() if colour in words]
    return named[0] if len(named) == 1 else None


def reworded(text: str, other: SceneObject) -> str | None:
    """``text``, one of ``TEMPLATES`` naming an object, in the same words naming ``other``
    (colour and shape); None where ``text`` is no template's."""
    named = named_object(text)
    if named is None:
        return None
    for words in TEMPLATES:
        if words.format(colour=named.colour, shape=shape_word(named)) == text.strip():
            return words.format(colour=other.colour, shape=shape_word(other))
    return None


def footprint_distance(x: float, y: float, o: SceneObject) -> float:
    return math.hypot(x - o.x, y - o.y) - o.radius


def _free_start(rng: np.random.Generator, accept: Callable[[float, float], bool]) -> Pose2D:
    """A start pose drawn from ``rng``: positions uniform in the room until one is free and
    ``accept``-ed, then a uniform heading (the draws every seeded episode is made of)."""
    lim = ROOM - BASE_RADIUS - MARGIN - 0.1
    while True:
        x, y = rng.uniform(-lim, lim, 2)
        if free(x, y) and accept(x, y):
            return Pose2D(float(x), float(y), float(rng.uniform(-math.pi, math.pi)))


def sample_episode(seed: int, colour: str | None = None, template: int | None = None
                   ) -> VlnEpisode:
    """The seeded episode: a free start pose at least ``MIN_START_DISTANCE`` from the target,
    a random heading; ``colour`` / ``template`` fix the target and wording (the language
    check swaps the colour at the same start)."""
    rng = np.random.default_rng(seed)
    target = COLOURS[colour] if colour else OBJECTS[int(rng.integers(len(OBJECTS)))]
    words = TEMPLATES[int(rng.integers(len(TEMPLATES))) if template is None else template]
    start = _free_start(rng, lambda x, y: all(
        footprint_distance(x, y, o) >= MIN_START_DISTANCE
        for o in ([target] if colour is None else OBJECTS)))
    return VlnEpisode(seed, start, target,
                      words.format(colour=target.colour, shape=shape_word(target)))


def _need_two(colours: tuple[str, ...]) -> None:
    if len(colours) < 2:
        raise ValueError("starts beside an object need two or more colours: the neighbour "
                         "and at least one to name")


def sample_beside(seed: int, colours: tuple[str, ...]) -> tuple[Pose2D, SceneObject, int]:
    """A start beside one of the ``colours``' objects (the neighbour, chosen by seed): within
    ``MIN_START_DISTANCE`` of its footprint and at least that far from every other object, a
    random heading; and the seed's wording (a ``TEMPLATES`` index). The evaluation's starts
    are mostly such (31 of seeds 10000-10039 begin beside an object other than the named
    one); the clear-of-all starts of the language check never are."""
    _need_two(colours)
    rng = np.random.default_rng(seed)
    neighbour = COLOURS[colours[int(rng.integers(len(colours)))]]
    template = int(rng.integers(len(TEMPLATES)))
    start = _free_start(rng, lambda x, y: footprint_distance(x, y, neighbour) < MIN_START_DISTANCE
                        and all(footprint_distance(x, y, o) >= MIN_START_DISTANCE
                                for o in OBJECTS if o is not neighbour))
    return start, neighbour, template


def parse_colours(text: str) -> tuple[str, ...]:
    """"red,blue" -> ("red", "blue"); an unknown colour is an error naming the known ones."""
    colours = tuple(c.strip().lower() for c in text.split(",") if c.strip())
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"unknown colour(s) {unknown}; the room has {sorted(COLOURS)}")
    return colours


def episode_at(seed_start: int, k: int, colours: tuple[str, ...] = (),
               beside: bool = False) -> VlnEpisode:
    """Episode ``k`` of a run: seed ``seed_start + k``; with ``colours`` (the language
    check), each start pose (seed ``seed_start + k // len(colours)``) once per colour; with
    ``beside`` too, each start beside one of the colours' objects (``sample_beside``), once
    per other colour (``len(colours) - 1`` episodes a start)."""
    if not colours:
        return sample_episode(seed_start + k)
    if not beside:
        return sample_episode(seed_start + k // len(colours), colour=colours[k % len(colours)])
    _need_two(colours)
    per = len(colours) - 1
    seed = seed_start + k // per
    start, neighbour, template = sample_beside(seed, colours)
    target = COLOURS[[c for c in colours if c != neighbour.colour][k % per]]
    return VlnEpisode(seed, start, target, TEMPLATES[template].format(
        colour=target.colour, shape=shape_word(target)))


def episodes_in_run(starts: int, colours: tuple[str, ...] = (), beside: bool = False) -> int:
    """How many episodes a run of ``starts`` start poses has (``episode_at``'s k < this)."""
    return starts * (len(colours) - 1 if colours and beside else max(len(colours), 1))


def language_figures(rows: list[dict]) -> dict:
    """The language check's figures from its judged episodes (each start once per colour;
    rows as ``vln_episodes`` judges them: seed, target, success, reached,
    names_known_object).
    ``reached_by_instruction``: instructed object -> object stopped at ("none": not within
    the success radius of any), the confusion matrix; ``objects_per_start``: how many
    different objects the base stopped at from each start as the colour changed -- 1 where
    it went to the same one whatever was named (the words ignored), the number of colours
    where it followed each; a policy's own sampling noise can vary it too, so it is read
    beside the confusion matrix."""
    known = [r for r in rows if r["names_known_object"]]
    confusion: dict[str, dict[str, int]] = {}
    by_start: dict[int, set[str]] = {}
    for r in known:
        row = confusion.setdefault(r["target"], {})
        reached = r["reached"] or "none"
        row[reached] = row.get(reached, 0) + 1
        by_start.setdefault(int(r["seed"]), set())
        if r["reached"]:
            by_start[int(r["seed"])].add(r["reached"])
    wins = sum(r["success"] for r in known)  # reached the instructed one, untouched, in time
    return {"reached_instructed": wins, "episodes": len(known),
            "share": wins / max(len(known), 1), "chance": 1 / len(OBJECTS),
            "reached_by_instruction": confusion,
            "objects_per_start": {str(k): len(v) for k, v in sorted(by_start.items())}}


def start_clearance(x: float, y: float, target: str) -> float:
    """How far (m) a start at (x, y) is from the footprint of the nearest object other than
    the named one ``target``: below ``MIN_START_DISTANCE`` the base begins beside an object
    it must leave (the language check's starts, drawn clear of every object, never do)."""
    return min(footprint_distance(x, y, o) for o in OBJECTS if o.name != target)


def success_by_start(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Successes and episodes of the judged episodes ``rows`` (start, target, success,
    names_known_object) split by where they began: ``beside_another_object`` (within
    ``MIN_START_DISTANCE`` of an object that is not the named one) or ``clear_of_all``."""
    split = {"beside_another_object": {"successes": 0, "episodes": 0},
             "clear_of_all": {"successes": 0, "episodes": 0}}
    for r in rows:
        if not r["names_known_object"]:
            continue
        x, y = r["start"][:2]
        cell = split["beside_another_object" if start_clearance(x, y, r["target"])
                     < MIN_START_DISTANCE else "clear_of_all"]
        cell["successes"] += bool(r["success"])
        cell["episodes"] += 1
    return split


FAILURE_KINDS = ("stopped_at_start", "stopped_at_another_object", "ran_out_of_time",
                 "collided", "stopped_short", "stopped_elsewhere")
NEAR_MISS = 1.0  # m from the named object's footprint: a stop inside it is "stopped_short"
AT_START = 0.1  # m travelled: a stop before this is "stopped_at_start"


def failure_kind(row: dict) -> str | None:
    """What went wrong in a judged episode (``evaluate_vln``'s row), the first that applies
    in ``FAILURE_KINDS``' order; None for a success. ``stopped_at_start``: the policy called
    the goal reached before moving ``AT_START``; ``stopped_short``: it stopped within
    ``NEAR_MISS`` of the named object, outside the success radius."""
    if row["success"]:
        return None
    if row["stopped"] and row["path_m"] < AT_START:
        return "stopped_at_start"
    if row["stopped"] and row["reached"] not in (None, row["target"]):
        return "stopped_at_another_object"
    if not row["stopped"]:
        return "ran_out_of_time"
    if row["collisions"] > 0:
        return "collided"
    if row["distance_to_target_m"] < NEAR_MISS:
        return "stopped_short"
    return "stopped_elsewhere"


def failure_kinds(rows: list[dict]) -> dict[str, int]:
    """How many of the judged episodes ``rows`` failed in each way (``failure_kind``)."""
    counts = dict.fromkeys(FAILURE_KINDS, 0)
    for r in rows:
        kind = failure_kind(r) if r["names_known_object"] else None
        if kind is not None:
            counts[kind] += 1
    return counts


def free(x: float, y: float, clearance: float = BASE_RADIUS + MARGIN) -> bool:
    """The base centred at (x, y) keeps ``clearance`` from every wall and object."""
    if abs(x) > ROOM - clearance or abs(y) > ROOM - clearance:
        return False
    return all(math.hypot(x - o.x, y - o.y) >= o.radius + clearance for o in OBJECTS)


def succeeded(pose: Pose2D, target: SceneObject, stopped: bool, bumped: bool,
              elapsed: float) -> bool:
    return (stopped and not bumped and elapsed <= TIME_LIMIT
            and footprint_distance(pose.x, pose.y, target) <= SUCCESS_RADIUS)


def spl(success: bool, shortest: float, travelled: float) -> float:
    return float(success) * shortest / max(shortest, travelled, 1e-9)


class _Grid:
    def __init__(self) -> None:
        n = round(2 * ROOM / GRID) + 1
        self.n = n
        xs = -ROOM + GRID * np.arange(n)
        self.xs = xs
        self.ok = np.array([[free(x, y) for y in xs] for x in xs])

    def cell(self, x: float, y: float) -> tuple[int, int]:
        return (round((x + ROOM) / GRID), round((y + ROOM) / GRID))

    def point(self, c: tuple[int, int]) -> tuple[float, float]:
        return (float(self.xs[c[0]]), float(self.xs[c[1]]))


_GRID: _Grid | None = None


def _grid() -> _Grid:
    global _GRID
    if _GRID is None:
        _GRID = _Grid()
    return _GRID


def plan_path(start: Pose2D, target: SceneObject, approach: float = APPROACH
              ) -> tuple[np.ndarray, float]:
    """Waypoints [N, 2] from the start to the nearest free point within ``approach`` of the
    target's footprint (A* on the grid, then straightened where the line is free), and the
    length of that polyline from the start (the shortest path, for SPL). A ValueError when
    the start is not free or no such point is reachable."""
    g = _grid()
    s = g.cell(start.x, start.y)
    if not (0 <= s[0] < g.n and 0 <= s[1] < g.n) or not free(start.x, start.y, BASE_RADIUS):
        raise ValueError(f"start {start} is not free")

    def goal(c: tuple[int, int]) -> bool:
        return footprint_distance(*g.point(c), target) <= approach

    steps = [(dx, dy, math.hypot(dx, dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
             if dx or dy]
    best = {s: 0.0}
    came: dict[tuple[int, int], tuple[int, int]] = {}
    heap = [(footprint_distance(start.x, start.y, target), 0.0, s)]
    while heap:
        _, cost, c = heapq.heappop(heap)
        if cost > best.get(c, math.inf):
            continue
        if goal(c):
            cells = [c]
            while cells[-1] in came:
                cells.append(came[cells[-1]])
            pts = np.array([g.point(k) for k in reversed(cells)])
            pts[0] = (start.x, start.y)
            pts = _shortcut(pts)
            length = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())
            return (pts[1:] if len(pts) > 1 else pts), length
        for dx, dy, d in steps:
            k = (c[0] + dx, c[1] + dy)
            if not (0 <= k[0] < g.n and 0 <= k[1] < g.n) or not g.ok[k]:
                continue
            new = cost + d
            if new < best.get(k, math.inf):
                best[k], came[k] = new, c
                px, py = g.point(k)
                h = max(footprint_distance(px, py, target) - approach, 0.0) / GRID
                heapq.heappush(heap, (new + h, new, k))
    raise ValueError(f"no free path from {start} to {target.name}")


def _shortcut(pts: np.ndarray) -> np.ndarray:
    """Drop waypoints where the straight line between their neighbours stays free."""
    out, i = [pts[0]], 0
    while i < len(pts) - 1:
        j = len(pts) - 1
        while j > i + 1 and not _line_free(pts[i], pts[j]):
            j -= 1
        out.append(pts[j])
        i = j
    return np.array(out)


def _line_free(a: np.ndarray, b: np.ndarray) -> bool:
    n = max(2, math.ceil(float(np.linalg.norm(b - a)) / (GRID / 2)))
    return all(free(*(a + (b - a) * t)) for t in np.linspace(0.0, 1.0, n))


def in_view(pose: Pose2D, o: SceneObject, image_size: tuple[int, int] = (240, 320),
            margin: float = VIEW_MARGIN) -> bool:
    """The object's centre lies inside the front camera's horizontal view, ``margin`` from
    its edges, and no other object stands on the line of sight to it."""
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    cam = np.array([pose.x + CAMERA_X * c, pose.y + CAMERA_X * s])
    bearing = float(wrap(math.atan2(o.y - cam[1], o.x - cam[0]) - pose.yaw))
    if abs(bearing) > horizontal_fov(image_size) / 2.0 - margin:
        return False
    ray = np.array([o.x, o.y]) - cam
    for other in OBJECTS:
        if other is o:
            continue
        u = float(np.clip(np.dot([other.x, other.y] - cam, ray) / float(ray @ ray), 0.0, 1.0))
        if math.dist(cam + u * ray, (other.x, other.y)) < other.radius:
            return False
    return True


@dataclass(frozen=True)
class Detour:
    """A push off the demonstrator's path: once the base is within ``(1 - at)`` of the planned
    path's length from its end, it drives (``v``, ``w``) for ``seconds`` (ending early where
    the arc would come near a wall or object), then plans again from where it is."""

    at: float  # share of the planned path behind it when the push starts
    seconds: float
    v: float  # m/s
    w: float  # rad/s


def sample_detour(seed: int, share: float) -> Detour | None:
    """The episode's detour, or None: seeded (one stream per episode seed, apart from the
    episode's own), so ``share`` of the episodes get one, the same ones on every run."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the share of episodes with a detour must be in [0, 1], got {share}")
    rng = np.random.default_rng([seed, 1])
    if rng.random() >= share:
        return None
    return Detour(at=float(rng.uniform(0.2, 0.8)), seconds=float(rng.uniform(0.8, 1.6)),
                  v=float(rng.uniform(0.0, 0.3)),
                  w=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2)))


def _arc(pose: Pose2D, v: float, w: float, t: float) -> tuple[float, float]:
    """Where a base at ``pose`` driving (v, w) is after ``t`` seconds (x, y)."""
    if abs(w) < 1e-9:
        return pose.x + v * t * math.cos(pose.yaw), pose.y + v * t * math.sin(pose.yaw)
    r = v / w
    return (pose.x + r * (math.sin(pose.yaw + w * t) - math.sin(pose.yaw)),
            pose.y - r * (math.cos(pose.yaw + w * t) - math.cos(pose.yaw)))


class ScriptedNavigator:
    """The demonstrator: plans from the start, follows, then stops (``step`` returns (v, w,
    stop)). ``search``: first turns left in place (accelerating to SEARCH_RATE) until the
    named object is in view, or for one full turn, then plans from where it is. ``detour``:
    pushed off the path once (``detouring`` says when), then it plans again from there,
    searching first if the object is out of view."""

    def __init__(self, episode: VlnEpisode, config: FollowerConfig | None = None,
                 search: bool = False, detour: Detour | None = None) -> None:
        self.target = episode.target
        self.path, self.shortest = plan_path(episode.start, episode.target)
        # A short lookahead: pure pursuit cuts corners by about it, and the plan keeps only
        # MARGIN of clearance.
        self.config = config or FollowerConfig(lookahead=0.2, goal_tolerance=0.08)
        self.follower = PurePursuit(self.config)
        self.search = search
        self.searching = search and not in_view(episode.start, episode.target)
        self.searched = 0.0  # rad turned while searching
        self._w = 0.0
        self.detour = detour  # until it starts
        self._pushed: Detour | None = None  # the detour under way
        self._detour_left = 0.0  # s
        self._planned = 0.0  # m: the length of the path being followed, at its start
        if not self.searching:
            self._follow(episode.start, self.path, self.shortest)

    @property
    def detouring(self) -> bool:
        """Being pushed: these commands are not the demonstrator's."""
        return self._pushed is not None

    def _follow(self, pose: Pose2D, path: np.ndarray, length: float) -> None:
        self.path, self._planned = path, length
        self.follower.set_path(path, pose)

    def _plan(self, pose: Pose2D, v: float, w: float) -> None:
        """Plan from ``pose`` and follow, moving at (v, w) now (the follower's limits take
        that motion down)."""
        self._follow(pose, *plan_path(pose, self.target))
        self.follower.reset_velocity(v, w)

    def _plan_from(self, pose: Pose2D, v: float, w: float) -> None:
        """Search (if it does) or plan from ``pose``, moving at (v, w) now."""
        self._w = 0.0
        if self.search and not in_view(pose, self.target):
            self.searching, self.searched = True, 0.0
            return
        self._plan(pose, v, w)

    def _clear(self, pose: Pose2D, v: float, w: float) -> bool:
        return all(free(*_arc(pose, v, w, t), BASE_RADIUS + MARGIN + DETOUR_CLEARANCE)
                   for t in np.linspace(0.0, DETOUR_LOOKAHEAD_S, 7))

    def step(self, pose: Pose2D, dt: float) -> tuple[float, float, bool]:
        d = self._pushed
        if d is not None:
            if self._detour_left > 0.0 and self._clear(pose, d.v, d.w):
                self._detour_left -= dt
                return d.v, d.w, False
            self._pushed = None
            self._plan_from(pose, d.v, d.w)
        if self.searching:
            if not (in_view(pose, self.target) or self.searched >= 2.0 * math.pi):
                self._w = min(SEARCH_RATE, self._w + self.config.max_angular_accel * dt)
                self.searched += self._w * dt
                return 0.0, self._w, False
            self.searching = False
            self._plan(pose, 0.0, self._w)
        d = self.detour
        if d is not None:
            left = math.dist((pose.x, pose.y), self.path[-1][:2])
            if left <= (1.0 - d.at) * self._planned and self._clear(pose, d.v, d.w):
                self.detour, self._pushed = None, d
                self._detour_left = d.seconds - dt
                return d.v, d.w, False
        return self.follower.step(pose, dt)
