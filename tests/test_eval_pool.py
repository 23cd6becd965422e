"""The Ray evaluation pool: pool size does not change predictions; Ray restarts a dead actor and
retries its shard once, a shard that raises is retried once, and rows that still fail are
reported (never lost)."""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("EMOLOOM_CACHE", tempfile.mkdtemp(prefix="emoloom-test-cache-"))

from emoloom.eval import testing  # noqa: E402
from emoloom.eval.run import EvalConfig, evaluate, predict_in_process, write_outputs  # noqa: E402
from emoloom.models import ModelSpec  # noqa: E402

pytestmark = pytest.mark.slow
MAX_NEW = 10
SHARD = 3


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        # address="local": a private instance, immune to a stale `ray start` address file.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def records():
    return testing.mixed_records(8, seed=21)


@pytest.fixture(scope="module")
def in_process(records):
    cfg = EvalConfig(model=ModelSpec(name="tiny-qwen2"), max_new_tokens=MAX_NEW, shard_size=SHARD)
    with testing.torch_threads(1):
        return predict_in_process(cfg, records)


@pytest.fixture(scope="module")
def faults_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def pool(ray_local, faults_dir):
    """One pool for the module (every actor start costs seconds): size 1 first, then 2. Its
    actors fail only when a test sets faults."""
    testing.set_faults(faults_dir, {})
    with testing.faulty_pool("tiny-qwen2", faults_dir, actors=1, max_new_tokens=MAX_NEW) as pool:
        yield pool


def _file(tmp_path, name, rows):
    write_outputs(tmp_path / name, rows, {})
    return (tmp_path / name / "predictions.jsonl").read_bytes()


def test_pool_sizes_give_identical_predictions(pool, records, in_process, tmp_path):
    assert len(pool.actors) == 1
    cfg = EvalConfig(model=ModelSpec(name="tiny-qwen2"), max_new_tokens=MAX_NEW, shard_size=SHARD, actors=1,
                     out=str(tmp_path / "one"), bootstrap=0)
    result = evaluate(cfg, records, pool=pool)
    one = (tmp_path / "one" / "predictions.jsonl").read_bytes()
    pool.resize(2)
    two = _file(tmp_path, "two", pool.run(records, shard_size=SHARD))
    assert one == two == _file(tmp_path, "zero", in_process)
    assert result["failed_rows"] == 0 and result["data"]["records"] == len(records)
    assert [line for line in one.decode().splitlines()][0].startswith('{"id": "%s"' % records[0].id)


def test_failed_shards_are_retried_by_ray_and_reported(pool, records, in_process, faults_dir):
    pool.resize(2)
    failures = len(pool.failures)
    pids = set(ray_get([a.pid.remote() for a in pool.actors]))
    # shard 0 raises once (Ray's retry succeeds); shard 1's actor dies on both tries.
    testing.set_faults(faults_dir, {"raise": {0: 1}, "exit": {1: 2}})
    rows = pool.run(records, shard_size=SHARD)
    testing.set_faults(faults_dir, {})
    assert [r["id"] for r in rows] == [r.id for r in records]  # input order, nothing lost
    from emoloom.eval.predict import plan_shards

    shards = plan_shards(records, SHARD)
    for i in shards[0] + shards[2]:
        assert rows[i] == in_process[i]
    for i in shards[1]:
        assert rows[i]["error"] == "actor_failed" and rows[i]["parse_ok"] is False
        assert rows[i]["gold_labels"] == records[i].labels
    assert len(pool.failures) - failures == 1 and pool.failures[-1].startswith("shard 1:"), pool.failures
    # Ray restarted the actor that died (a new process behind the same handle), and it works:
    # a clean run afterwards equals the in-process rows.
    assert set(ray_get([a.pid.remote() for a in pool.actors])) != pids
    assert pool.run(records, shard_size=SHARD) == in_process


def ray_get(refs):
    import ray

    return ray.get(refs)
