"""A/B mixture sampling with an entropy-aware, cooling class temperature.

Two pools: A holds the original gold records, B the augmented ones (Valence Flip) and any source
configured as pool B (a second corpus, lexicon-weak records). Every example of a batch is drawn
in three steps:

1. pool:   B with probability `mix_b` (A when B is empty), else A;
2. class:  c with p(c) = n_c^(1/T_eff) / sum_k n_k^(1/T_eff), n_c = records of class c in the pool;
3. record: uniform among the pool's records of class c.

T = 1 keeps the natural class distribution; T -> infinity is uniform over classes (rare classes
up-weighted); T < 1 sharpens towards frequent classes. The temperature follows a schedule over
training progress u = step / (total_steps - 1) in [0, 1]:

    constant:     T(u) = T0
    linear:       T(u) = T0 + (T1 - T0) * u
    cosine:       T(u) = T1 + (T0 - T1) * (1 + cos(pi * u)) / 2
    exponential:  T(u) = T0 * (T1 / T0) ** u            (geometric interpolation)

and is modulated by the entropy of the model's recent label predictions (`observe`):

    T_eff(t) = T(u) * (1 + kappa * (1 - H_recent / H_max))

H_recent is the entropy of the empirical distribution of the last `entropy_window` predicted
classes, H_max = log K for the K classes present in the pools. When predictions collapse onto a
few classes (low entropy) the sampler heats up and feeds more of the neglected classes; with
diverse predictions (H_recent = H_max) T_eff = T(u). Before anything is observed, or with fewer
than two classes, the factor is 1.

The class of a record is its taxonomy plus its first label (``"goemotions:joy"``), so taxonomies
never share a class. The sampler is seeded (seed, rank) and its whole state (RNG, step, recent
predictions) is JSON-able through `state_dict` / `load_state_dict` for checkpoints.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from typing import Iterable, Sequence

import numpy as np

SCHEDULES = ("constant", "linear", "cosine", "exponential")


def class_key(record) -> str:
    """Sampling class of a contract Record: taxonomy + first label."""
    return f"{record.taxonomy}:{record.labels[0] if record.labels else 'none'}"


def scheduled_temperature(schedule: str, t_start: float, t_end: float, progress: float) -> float:
    """T(u) of the module docstring; progress u is clipped to [0, 1]."""
    u = min(1.0, max(0.0, progress))
    if schedule == "constant":
        return t_start
    if schedule == "linear":
        return t_start + (t_end - t_start) * u
    if schedule == "cosine":
        return t_end + (t_start - t_end) * (1.0 + math.cos(math.pi * u)) / 2.0
    if schedule == "exponential":
        return t_start * (t_end / t_start) ** u
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def tempered_probs(counts: Sequence[int], temperature: float) -> np.ndarray:
    """p_c proportional to n_c ** (1 / T), computed in log space (no overflow for small T)."""
    logits = np.log(np.asarray(counts, dtype=np.float64)) / temperature
    logits -= logits.max()
    p = np.exp(logits)
    return p / p.sum()


def entropy(keys: Iterable[str]) -> float:
    counts = np.asarray(list(Counter(keys).values()), dtype=np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


class MixtureSampler:
    """Draws (pool, index) pairs; see the module docstring for the distribution."""

    def __init__(self, keys_a: Sequence[str], keys_b: Sequence[str] = (), *, mix_b: float = 0.3,
                 schedule: str = "cosine", t_start: float = 4.0, t_end: float = 1.0, kappa: float = 1.0,
                 entropy_window: int = 256, total_steps: int = 1, seed: int = 0, rank: int = 0):
        if not keys_a and not keys_b:
            raise ValueError("both sampling pools are empty")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if t_start <= 0 or t_end <= 0:
            raise ValueError("temperatures must be > 0")
        self.mix_b = float(mix_b)
        self.schedule, self.t_start, self.t_end, self.kappa = schedule, float(t_start), float(t_end), float(kappa)
        self.total_steps = max(1, int(total_steps))
        self.pools: dict[str, tuple[list[str], list[np.ndarray]]] = {}
        for name, keys in (("A", keys_a), ("B", keys_b)):
            by_class: dict[str, list[int]] = {}
            for i, k in enumerate(keys):
                by_class.setdefault(k, []).append(i)
            classes = sorted(by_class)  # sorted: the draw does not depend on record order
            self.pools[name] = (classes, [np.asarray(by_class[c]) for c in classes])
        n_classes = len(set(keys_a) | set(keys_b))
        self.h_max = math.log(n_classes) if n_classes > 1 else 0.0
        self.recent: deque[str] = deque(maxlen=int(entropy_window))
        self.step = 0
        self.rng = np.random.Generator(np.random.PCG64([int(seed), int(rank), 0x5A3]))

    @classmethod
    def from_config(cls, keys_a, keys_b, cfg, *, total_steps: int, seed: int, rank: int = 0) -> "MixtureSampler":
        """Build from a `SamplingSection` (emoloom.train.config)."""
        return cls(keys_a, keys_b, mix_b=cfg.mix_b, schedule=cfg.schedule, t_start=cfg.t_start, t_end=cfg.t_end,
                   kappa=cfg.kappa, entropy_window=cfg.entropy_window, total_steps=total_steps, seed=seed, rank=rank)

    # -- temperature ----------------------------------------------------------------------------

    def progress(self) -> float:
        return self.step / max(1, self.total_steps - 1)

    def temperature(self) -> float:
        """The scheduled T(u) at the current step (no entropy modulation)."""
        return scheduled_temperature(self.schedule, self.t_start, self.t_end, self.progress())

    def entropy_factor(self) -> float:
        if not self.recent or self.h_max == 0.0:
            return 1.0
        h = min(entropy(self.recent), self.h_max)
        return 1.0 + self.kappa * (1.0 - h / self.h_max)

    def effective_temperature(self) -> float:
        return self.temperature() * self.entropy_factor()

    def class_probs(self, pool: str = "A") -> dict[str, float]:
        classes, members = self.pools[pool]
        if not classes:
            return {}
        p = tempered_probs([len(m) for m in members], self.effective_temperature())
        return dict(zip(classes, p.tolist()))

    # -- drawing ----------------------------------------------------------------------------------

    def draw(self, n: int) -> list[tuple[str, int]]:
        """One batch of `n` (pool, record index) pairs; advances the schedule by one step."""
        t_eff = self.effective_temperature()
        has_a, has_b = bool(self.pools["A"][0]), bool(self.pools["B"][0])
        probs = {name: tempered_probs([len(m) for m in self.pools[name][1]], t_eff)
                 for name in ("A", "B") if self.pools[name][0]}
        out = []
        for _ in range(n):
            use_b = has_b and (not has_a or self.rng.random() < self.mix_b)
            name = "B" if use_b else "A"
            classes, members = self.pools[name]
            c = int(self.rng.choice(len(classes), p=probs[name]))
            out.append((name, int(members[c][self.rng.integers(len(members[c]))])))
        self.step += 1
        return out

    def observe(self, predicted_keys: Iterable[str]) -> None:
        """Record the model's latest predicted classes (same keys as `class_key`)."""
        self.recent.extend(predicted_keys)

    # -- checkpoint -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"step": self.step, "recent": list(self.recent), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.rng.bit_generator.state = state["rng"]
