"""Task families: names resolve to Task objects once; MaMuJoCo offers every robot and factorization
gymnasium-robotics has, for collect, split-d4rl, train and eval alike."""

from __future__ import annotations

import pytest

import madata
from madata.envs.family import Task
from madata.envs.grid import GRID
from madata.envs.mamujoco import MAMUJOCO, SCENARIOS
from madata.envs.registry import get_task, is_task, task_names
from madata.errors import UnknownNameError


def test_names_resolve_to_tasks_of_their_family():
    grid = get_task("grid")
    assert isinstance(grid, Task) and grid.family is GRID and grid.default_action == 1 and grid.max_steps == 30
    assert get_task(grid) is grid  # a resolved Task passes through
    hc = get_task("halfcheetah-2x3")
    assert hc.family is MAMUJOCO and hc.agent_ids == ("agent_0", "agent_1") and hc.reference_scores["max"] == 12135.0
    k0 = get_task("hopper-3x1-k0")
    assert k0.env["agent_obsk"] == 0 and k0.agent_ids == ("agent_0", "agent_1", "agent_2")
    assert get_task("humanoid-9|8").agent_ids == ("agent_0", "agent_1")
    assert get_task("manysegmentant-3x2").env["agent_conf"] == "3x2"
    for name in task_names():
        assert is_task(name)
    assert {f"{r}-{c}" for r, (_, confs) in SCENARIOS.items() for c in confs if c != "NxK"} <= set(task_names())


@pytest.mark.parametrize(
    "name,needle",
    [
        ("halfcheetah-5x2", "2x3, 6x1"),
        ("cheetah-2x3", "known tasks"),
        ("hopper-3x1-k1", "hopper-3x1"),
        ("", "known tasks"),
    ],
)
def test_bad_names_say_what_exists(name, needle):
    with pytest.raises(UnknownNameError, match=needle):
        get_task(name)
    assert not is_task(name)


@pytest.mark.parametrize("name", ["ant-4x2", "hopper-3x1-k0", "swimmer-2x1"])
def test_collect_from_any_mamujoco_factorization(name, tmp_path):
    pytest.importorskip("gymnasium_robotics")
    from madata.collect import collect

    ds = collect(name, tmp_path / "d.zarr", mix=["random"], episodes=2, max_steps=15, seed=0, envs=2)
    assert ds.num_episodes == 2 and ds.meta.env["id"] == name and madata.verify(tmp_path / "d.zarr").ok
    task = get_task(name)
    team = task.team_env()
    try:
        assert [a.id for a in ds.agents] == [a.id for a in team.factorization.agents]
        assert ds.state_space.shape == team.factorization.state_space.shape
    finally:
        team.close()


def test_train_and_eval_on_a_split_d4rl_6x1_dataset(tmp_path):
    """split-d4rl writes halfcheetah-6x1; train evaluates it in MaMuJoCo's 6x1 env."""
    pytest.importorskip("gymnasium_robotics")
    pytest.importorskip("h5py")
    from madata.collect import collect
    from madata.convert import export_d4rl, split_d4rl
    from madata_algos.configs import CastBcqConfig
    from madata_algos.train import evaluate_run, train

    collect("halfcheetah-2x3", tmp_path / "hc.zarr", mix=["medium"], episodes=2, max_steps=30, seed=0, envs=2)
    export_d4rl(tmp_path / "hc.zarr", tmp_path / "hc.hdf5")
    ds = split_d4rl("halfcheetah", "6x1", tmp_path / "hc6.zarr", source=tmp_path / "hc.hdf5")
    assert ds.meta.env["id"] == "halfcheetah-6x1" and len(ds.agents) == 6
    small = CastBcqConfig(vae_hidden=(8,), actor_hidden=(8,), critic_hidden=(8,), n_target=2, n_act=4)
    rows = train(
        tmp_path / "hc6.zarr",
        tmp_path / "run",
        algorithm="cast-bcq",
        steps=4,
        batch_size=16,
        eval_every=4,
        eval_episodes=1,
        eval_max_steps=10,
        config=small,
        device="cpu",
    )
    assert rows[-1]["eval_normalized"] is not None
    assert evaluate_run(tmp_path / "run", device="cpu").mean_return == rows[-1]["eval_return"]
