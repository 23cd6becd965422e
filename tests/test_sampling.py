"""A/B mixture sampler: schedules, class temperature, entropy modulation, seeding, checkpoints."""
from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from emoloom.sampling import MixtureSampler, entropy, scheduled_temperature, tempered_probs

# an imbalanced pool: 4 classes with 500 / 100 / 20 / 5 records
KEYS = ["t:a"] * 500 + ["t:b"] * 100 + ["t:c"] * 20 + ["t:d"] * 5


def drawn_classes(sampler: MixtureSampler, n_batches: int, batch: int = 32, keys=KEYS, keys_b=()) -> list[str]:
    pools = {"A": keys, "B": list(keys_b)}
    return [pools[p][i] for _ in range(n_batches) for p, i in sampler.draw(batch)]


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "exponential"])
def test_schedule_endpoints_and_monotone(schedule):
    values = [scheduled_temperature(schedule, 8.0, 1.0, u / 20) for u in range(21)]
    assert values[0] == pytest.approx(8.0)
    assert values[-1] == pytest.approx(8.0 if schedule == "constant" else 1.0)
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))  # cooling never heats up
    if schedule == "linear":
        assert values[10] == pytest.approx(4.5)
    if schedule == "exponential":
        assert values[10] == pytest.approx(math.sqrt(8.0))  # geometric midpoint
    if schedule == "cosine":
        assert values[10] == pytest.approx(4.5)


def test_tempered_probs_limits():
    counts = [500, 100, 20, 5]
    natural = tempered_probs(counts, 1.0)
    assert natural.tolist() == pytest.approx([c / 625 for c in counts])
    hot = tempered_probs(counts, 1e6)
    assert hot.tolist() == pytest.approx([0.25] * 4, abs=1e-4)


def test_class_entropy_of_draws_rises_with_temperature():
    measured = []
    for t in (1.0, 2.0, 4.0, 16.0):
        sampler = MixtureSampler(KEYS, schedule="constant", t_start=t, t_end=t, kappa=0.0, seed=3)
        measured.append(entropy(drawn_classes(sampler, 60)))
    assert measured == sorted(measured), measured
    assert measured[-1] > 0.95 * math.log(4)  # near uniform over the 4 classes
    # T = 1 follows the natural distribution
    sampler = MixtureSampler(KEYS, schedule="constant", t_start=1.0, t_end=1.0, kappa=0.0, seed=3)
    share = Counter(drawn_classes(sampler, 100))["t:a"] / 3200
    assert share == pytest.approx(0.8, abs=0.03)


def test_cooling_schedule_lowers_entropy_of_later_batches():
    sampler = MixtureSampler(KEYS, schedule="linear", t_start=16.0, t_end=1.0, kappa=0.0, total_steps=200, seed=0)
    early = drawn_classes(sampler, 40)
    drawn_classes(sampler, 120)
    late = drawn_classes(sampler, 40)
    assert sampler.temperature() == pytest.approx(1.0)
    assert entropy(early) > entropy(late) + 0.2


def test_collapsed_predictions_heat_up():
    sampler = MixtureSampler(KEYS, schedule="constant", t_start=2.0, t_end=2.0, kappa=1.5, seed=0)
    assert sampler.effective_temperature() == pytest.approx(2.0)  # nothing observed yet
    sampler.observe(["t:a"] * 50)  # collapse: every prediction the same class
    assert sampler.effective_temperature() == pytest.approx(2.0 * 2.5)
    sampler.observe(["t:a", "t:b", "t:c", "t:d"] * 64)  # the window (256) now holds uniform predictions
    assert sampler.effective_temperature() == pytest.approx(2.0)


def test_mixture_ratio_and_empty_pool_b():
    keys_b = ["t:a"] * 10 + ["t:d"] * 10
    sampler = MixtureSampler(KEYS, keys_b, mix_b=0.25, seed=1)
    draws = [p for _ in range(100) for p, _ in sampler.draw(32)]
    assert draws.count("B") / len(draws) == pytest.approx(0.25, abs=0.03)
    only_a = MixtureSampler(KEYS, [], mix_b=0.9, seed=1)
    assert {p for p, _ in only_a.draw(64)} == {"A"}


def test_seeded_and_checkpointable():
    a = MixtureSampler(KEYS, ["t:b"] * 7, seed=5, total_steps=50)
    b = MixtureSampler(KEYS, ["t:b"] * 7, seed=5, total_steps=50)
    assert a.draw(16) == b.draw(16)
    other_rank = MixtureSampler(KEYS, ["t:b"] * 7, seed=5, rank=1, total_steps=50)
    assert other_rank.draw(16) != MixtureSampler(KEYS, ["t:b"] * 7, seed=5, total_steps=50).draw(16)

    a.observe(["t:a", "t:c"])
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able
    expected = [a.draw(16) for _ in range(5)]
    restored = MixtureSampler(KEYS, ["t:b"] * 7, seed=99, total_steps=50)
    restored.load_state_dict(state)
    assert [restored.draw(16) for _ in range(5)] == expected
    assert restored.step == a.step


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        MixtureSampler([], [])
    with pytest.raises(ValueError, match="schedule"):
        MixtureSampler(KEYS, schedule="step")
