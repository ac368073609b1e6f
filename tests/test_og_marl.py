"""OG-MARL vaults: read vaults flashbax wrote, write vaults flashbax reads, lose nothing on the way."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import random_episode, write
from typer.testing import CliRunner

import madata
from madata.errors import CorruptionError, DatasetNotFoundError, SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete

pytest.importorskip("tensorstore", reason="needs madata[og-marl]")
fbx = pytest.importorskip("flashbax", reason="the tests write vaults with flashbax itself")
from madata.convert.og_marl import export_og_marl, import_og_marl  # noqa: E402
from madata.diagnostics.coverage import saco  # noqa: E402

N, OBS, K, S, T = 2, 4, 5, 6, 30


def flashbax_vault(root, pad_agent=False, seed=0, forbid_step=None):
    """A vault written by flashbax's own Vault: 2 agents, 30 steps; a terminal at step 9, a truncation at
    step 19, and 10 steps of an unfinished episode; legal actions vary; agent 1 all zeros with ``pad_agent``."""
    import jax
    import jax.numpy as jnp
    from flashbax.vault import Vault

    rng = np.random.default_rng(seed)
    term, trunc = np.zeros((1, T, N), np.float32), np.zeros((1, T, N), np.float32)
    term[0, 9], trunc[0, 19] = 1, 1
    term[0, 4, 0] = 1  # one agent done alone (dead, say): not the end of the episode
    legals = (rng.random((1, T, N, K)) < 0.7).astype(np.float32)
    actions = rng.integers(0, K, (1, T, N)).astype(np.int32)
    legals[0, np.arange(T)[:, None], np.arange(N), actions[0]] = 1  # the taken action is legal
    data = {
        "observations": rng.standard_normal((1, T, N, OBS)).astype(np.float32),
        "actions": actions,
        "rewards": np.repeat(rng.standard_normal((1, T, 1)), N, 2).astype(np.float32),
        "terminals": term,
        "truncations": trunc,
        "infos": {"state": rng.standard_normal((1, T, S)).astype(np.float32), "legals": legals},
    }
    if pad_agent:
        for key in ("observations", "actions", "rewards"):
            data[key][0, :, N - 1] = 0
        legals[0, :, N - 1] = np.eye(K)[0]  # a padded agent may only take action 0
    if forbid_step is not None:
        legals[0, forbid_step, 0, actions[0, forbid_step, 0]] = 0
    one = jax.tree.map(lambda x: jnp.zeros(x.shape[2:], x.dtype), data)
    buf = fbx.make_trajectory_buffer(
        add_batch_size=1,
        max_length_time_axis=2 * T,
        min_length_time_axis=1,
        sample_batch_size=1,
        sample_sequence_length=1,
        period=1,
    )
    state = buf.add(buf.init(one), jax.tree.map(jnp.asarray, data))
    Vault(
        "toy.vlt", experience_structure=state.experience, rel_dir=str(root), vault_uid="Good", metadata={"env": "toy"}
    )
    Vault("toy.vlt", rel_dir=str(root), vault_uid="Good").write(state)
    return root / "toy.vlt", data


def test_a_flashbax_vault_imports_with_its_episode_boundaries(tmp_path):
    vault, data = flashbax_vault(tmp_path)
    ds = import_og_marl(vault, tmp_path / "ds")
    assert ds.num_episodes == 2 and list(ds.episode_lengths()) == [10, 10]
    assert ds.episodes.column("end").to_pylist() == ["terminated", "truncated"]
    report = ds.meta.provenance["report"]
    assert report["dropped_unfinished_steps"] == 10 and report["padded_agents"] == []
    assert report["final_observation"].startswith("repeated") and ds.meta.provenance["uid"] == "Good"
    ep = ds.episode(1)
    np.testing.assert_array_equal(ep.obs["agent_1"][:10], data["observations"][0, 10:20, 1])
    np.testing.assert_array_equal(ep.obs["agent_1"][10], data["observations"][0, 19, 1])  # repeated, as reported
    np.testing.assert_array_equal(ep.actions["agent_1"], data["actions"][0, 10:20, 1])
    np.testing.assert_array_equal(ep.state[:10], data["infos"]["state"][0, 10:20])
    np.testing.assert_array_equal(ep.action_masks["agent_0"][:10], data["infos"]["legals"][0, 10:20, 0] == 1)
    np.testing.assert_allclose(ep.rewards, data["rewards"][0, 10:20, 0])
    assert ds.agents[0].action_space == Discrete(K) and ds.spec.agent_rewards and ds.meta.env["id"] == "toy"
    with pytest.raises(SchemaError, match="ends with 10 steps of an unfinished episode"):
        import_og_marl(vault, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_export_then_import_gives_identical_data_and_flashbax_reads_the_vault(tmp_path):
    from flashbax.vault import Vault

    vault, _ = flashbax_vault(tmp_path)
    first = import_og_marl(vault, tmp_path / "a")
    out = export_og_marl(first, tmp_path / "again")
    second = import_og_marl(out.parent, tmp_path / "b")
    ta, tb = first.transitions(), second.transitions()
    assert sorted(ta) == sorted(tb) and all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert first.spec == second.spec
    keep = ["length", "return", "end", "seed", *[f"behaviour.{a}" for a in first.agent_ids]]
    assert first.episodes.select(keep).to_pylist() == second.episodes.select(keep).to_pylist()
    exp = Vault("again", rel_dir=str(tmp_path), vault_uid="madata").read().experience
    np.testing.assert_array_equal(np.asarray(exp["observations"])[0, :, 1], ta["obs/agent_1"])
    np.testing.assert_array_equal(np.asarray(exp["infos"]["next_observations"])[0, :, 0], ta["next_obs/agent_0"])
    assert np.asarray(exp["terminals"])[0, :, 0].sum() == 1  # one terminated episode of the two


def test_a_collected_madata_dataset_round_trips_through_a_vault(tmp_path):
    agents = [AgentSpec(f"agent_{i}", Box.make(-1, 1, (3,)), Box.make(-1, 1, (2,))) for i in range(2)]
    rng = np.random.default_rng(1)
    eps = [
        random_episode(agents, T_, rng, end, state_dim=4)
        for T_, end in [(5, "terminated"), (1, "truncated"), (7, "truncated")]
    ]
    src = madata.open(write(tmp_path / "src", agents, eps, state_dim=4))
    back = import_og_marl(export_og_marl(src, tmp_path / "v").parent, tmp_path / "back")
    ta, tb = src.transitions(), back.transitions()
    assert all(np.array_equal(ta[k], tb[k]) for k in ta) and src.spec == back.spec
    assert back.episodes.column("seed").to_pylist() == [0, 1, 2]
    assert back.episodes.column("behaviour.agent_1").to_pylist() == ["medium", "medium", "expert"]


def test_padding_and_bad_vaults_are_reported(tmp_path):
    vault, _ = flashbax_vault(tmp_path / "p", pad_agent=True)
    assert import_og_marl(vault, tmp_path / "padded").meta.provenance["report"]["padded_agents"] == ["agent_1"]
    meta = vault / "Good" / "metadata.json"
    m = json.loads(meta.read_text())
    m["structure_shape"]["infos"]["extra"] = "(1, 60, 2)"
    m["structure_dtype"]["infos"]["extra"] = "float32"
    meta.write_text(json.dumps(m))
    with pytest.raises(CorruptionError, match=r"leaf 'infos.extra' cannot be opened"):
        import_og_marl(vault, tmp_path / "x")
    meta.write_bytes(b"\xff not json")
    with pytest.raises(CorruptionError, match="metadata.json: not readable as JSON"):
        import_og_marl(vault, tmp_path / "x")
    with pytest.raises(SchemaError, match="step 4: agent_0 takes action .*, which its legals forbid"):
        import_og_marl(flashbax_vault(tmp_path / "f", forbid_step=4)[0], tmp_path / "x")
    with pytest.raises(DatasetNotFoundError, match="no vault with uid 'Bad'; it has Good"):
        import_og_marl(vault, tmp_path / "x", uid="Bad")
    assert not (tmp_path / "x").exists()


def test_a_damaged_leaf_fails_with_a_madata_error(tmp_path):
    vault, _ = flashbax_vault(tmp_path)
    files = sorted((vault / "Good" / "d").iterdir(), key=lambda p: p.stat().st_size)
    for f in files:  # every data file of the OCDBT store cut short
        f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])
    with pytest.raises(CorruptionError, match="cannot be (opened|read)"):
        import_og_marl(vault, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".x")]


def test_heterogeneous_agents_cannot_be_stacked_into_a_vault(tmp_path):
    agents = [
        AgentSpec("a", Box.make(-1, 1, (3,)), Box.make(-1, 1, (1,))),
        AgentSpec("b", Box.make(-1, 1, (4,)), Box.make(-1, 1, (1,))),
    ]
    src = write(tmp_path / "h", agents, [random_episode(agents, 3, np.random.default_rng(0))])
    with pytest.raises(SchemaError, match=r"same observation shape and action space; b has \(4,\)"):
        export_og_marl(src, tmp_path / "v")
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_saco_counts_distinct_state_joint_action_pairs():
    state = np.array([[0.0], [0.0], [1.0], [1.0]])
    acts = {"a": np.array([0, 0, 1, 2]), "b": np.array([1, 1, 1, 1])}
    assert saco(state, acts) == 0.75  # rows 0 and 1 repeat
    assert saco(state + np.array([[0.0], [1e-6], [0], [0]]), acts) == 1.0
    assert saco(state + np.array([[0.0], [1e-6], [0], [0]]), acts, decimals=4) == 0.75


def test_cli_import_and_export(tmp_path):
    from cli.app import app

    vault, _ = flashbax_vault(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["import", "og-marl", str(vault), "-o", str(tmp_path / "ds")])
    assert res.exit_code == 0 and "wrote 2 episodes, 20 transitions" in res.output, res.output
    assert "dropped 10 steps of an unfinished last episode" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "ds"), "--format", "og-marl", "-o", str(tmp_path / "v")])
    assert res.exit_code == 0 and (tmp_path / "v" / "madata" / "metadata.json").exists(), res.output
    for args, match in [
        (["export", str(tmp_path / "ds"), "--format", "og-marl", "-o", str(tmp_path / "v")], "exists"),
        (["import", "og-marl", str(tmp_path / "nowhere"), "-o", str(tmp_path / "y")], "no such vault directory"),
        (["import", "og-marl", str(vault), "--strict", "-o", str(tmp_path / "y")], "unfinished episode"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and match in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "y").exists()
    shutil.rmtree(tmp_path / "v")
