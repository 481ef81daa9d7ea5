"""Alert hygiene for the streaming drift monitor: verdicts in, episode transitions out.

An episode of a column opens when ``k`` consecutive evaluations say "drifted" and
closes when ``k`` consecutive evaluations say "not drifted"; in between nothing is
said, whatever the verdicts do. One transition is returned on open and one on close,
never one per evaluation. State can be seeded (``restore``) from the alerts already
published, so a restarted monitor neither repeats an opening nor forgets to close.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, Literal

Key = tuple[str, str, str]  # model_name, model_version, column
OPENED: Final = "drift_episode_opened"
CLOSED: Final = "drift_episode_closed"
_EPISODE_NS = uuid.UUID("0d7f3c52-5b8e-4c1e-9a57-3f1b6e2c4d81")


@dataclass
class _State:
    in_episode: bool = False
    over: int = 0  # consecutive drifted evaluations
    under: int = 0  # consecutive clean evaluations
    episode_id: str | None = None


@dataclass(frozen=True)
class Transition:
    kind: Literal["drift_episode_opened", "drift_episode_closed"]
    key: Key
    episode_id: str
    evaluations: int  # the streak that decided it (== k)


class Episodes:
    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self._states: dict[Key, _State] = {}

    def restore(self, key: Key, episode_id: str) -> None:
        """``key`` is inside the open episode ``episode_id`` (its opening alert is out)."""
        self._states[key] = _State(in_episode=True, episode_id=episode_id)

    def in_episode(self, key: Key) -> bool:
        s = self._states.get(key)
        return bool(s and s.in_episode)

    def open_episodes(self) -> dict[Key, str]:
        return {k: s.episode_id for k, s in self._states.items() if s.in_episode and s.episode_id}

    def observe(self, key: Key, drifted: bool, at: str) -> Transition | None:
        """Fold one evaluation's verdict in; ``at`` names the evaluation (it makes the
        episode id: the same evaluation replayed gives the same id)."""
        s = self._states.setdefault(key, _State())
        if drifted:
            s.over, s.under = s.over + 1, 0
            if not s.in_episode and s.over >= self.k:
                s.in_episode = True
                s.episode_id = str(uuid.uuid5(_EPISODE_NS, f"{'|'.join(key)}|{at}"))
                return Transition(OPENED, key, s.episode_id, s.over)
        else:
            s.over, s.under = 0, s.under + 1
            if s.in_episode and s.under >= self.k:
                s.in_episode = False
                episode_id, s.episode_id = s.episode_id or "", None
                return Transition(CLOSED, key, episode_id, s.under)
        return None
