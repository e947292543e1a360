"""The pool of tasks the sample logs are about, and how each task tends to turn out.

Several rows across streams share one task_id, so the pipeline has JOINs (extraction rows
inheriting from verdict rows) and preference pairs (an accepted and a rejected run of one task).
A task's *profile* decides the verdicts its rows carry: most tasks go well, some are rejected,
and some are contested, with parents that disagree.

Only a few small integer arrays are kept per task, so memory does not grow with rows beyond
rows/12 tasks' worth of bytes.
"""

import random
from array import array
from dataclasses import dataclass

from distillation_pipeline.sample import text
from distillation_pipeline.sample.repo import Repo

# Row categories in the scorer's terms: accepted, partial(ly accepted), rejected, (needs human) review.
ACCEPTED, PARTIAL, REJECTED, REVIEW = "accepted", "partial", "rejected", "review"

# profile -> ((category, cumulative probability), ...) for each verdict-bearing row of the task
PROFILES: dict[str, tuple[tuple[str, float], ...]] = {
    "accepted": ((ACCEPTED, 1.0),),
    "partial": ((PARTIAL, 0.7), (ACCEPTED, 1.0)),  # retry loops: accepted eventually, or only partly
    "rejected": ((REJECTED, 1.0),),
    "contested": ((ACCEPTED, 0.45), (PARTIAL, 0.65), (REJECTED, 1.0)),  # parents disagree
    "review": ((REVIEW, 1.0),),
}
_PROFILE_SHARES = (("accepted", 0.52), ("partial", 0.70), ("rejected", 0.82), ("contested", 0.94), ("review", 1.0))
_PROFILE_NAMES = tuple(PROFILES)

# How far (in tasks) a row may land from the task that is "current" at its point in time: tasks
# are active for a while, so their rows cluster in time the way real work does.
_ACTIVE_WINDOW = 24
_RECENT_TASKS = 512


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    text: str
    phase: int
    component: str
    files: tuple[str, ...]  # the files this task is about; most citations come from here
    profile: str

    def category(self, rng: random.Random) -> str:
        draw = rng.random()
        for category, cumulative in PROFILES[self.profile]:
            if draw < cumulative:
                return category
        return PROFILES[self.profile][-1][0]


class TaskPool:
    def __init__(self, rng: random.Random, size: int, repo: Repo) -> None:
        self._repo = repo
        self._components = repo.components
        self.size = size
        self._profile = bytearray(_draw_profile(rng) for _ in range(size))
        self._template = bytearray(rng.randrange(len(text.TASK_TEMPLATES)) for _ in range(size))
        self._subject = bytearray(rng.randrange(len(text.SUBJECTS)) for _ in range(size))
        self._phase = bytearray(rng.randrange(1, 46) for _ in range(size))
        self._component = bytearray(rng.randrange(len(self._components)) for _ in range(size))
        self._file_seed = array("I", (rng.getrandbits(32) for _ in range(size)))
        self._recent: dict[int, Task] = {}

    def near(self, progress: float, rng: random.Random) -> Task:
        """A task active at ``progress`` (0..1) through the time window."""
        window = min(_ACTIVE_WINDOW, self.size)
        index = int(progress * self.size) + rng.randint(-window, window)
        return self.get(min(max(index, 0), self.size - 1))

    def orphan(self, rng: random.Random) -> Task:
        """A task id outside the pool: extraction rows about it have no verdict-bearing parent."""
        index = self.size + rng.randrange(max(1, self.size // 20))
        return self._make(f"task-{index:06d}", rng.randrange(len(self._components)), rng.getrandbits(32),
                          rng.randrange(len(text.TASK_TEMPLATES)), rng.randrange(len(text.SUBJECTS)),
                          rng.randrange(1, 46), "review")

    def get(self, index: int) -> Task:
        # Rows cluster on the few dozen tasks active at a time: keep those built.
        task = self._recent.get(index)
        if task is None:
            if len(self._recent) >= _RECENT_TASKS:
                self._recent.clear()
            task = self._recent[index] = self._build(index)
        return task

    def _build(self, index: int) -> Task:
        return self._make(f"task-{index:06d}", self._component[index], self._file_seed[index],
                          self._template[index], self._subject[index], self._phase[index],
                          _PROFILE_NAMES[self._profile[index]])

    def _make(self, task_id: str, component_index: int, file_seed: int, template: int, subject: int,
              phase: int, profile: str) -> Task:
        component = self._components[component_index]
        group = self._repo.by_component[component]
        # Two files of the task's own component: derived from a stored seed, not stored themselves.
        files = (group[file_seed % len(group)], group[(file_seed >> 16) % len(group)])
        return Task(task_id, text.task_text(template, subject, phase, component.replace("_", " ")),
                    phase, component, files, profile)


def _draw_profile(rng: random.Random) -> int:
    draw = rng.random()
    for name, cumulative in _PROFILE_SHARES:
        if draw < cumulative:
            return _PROFILE_NAMES.index(name)
    return 0
