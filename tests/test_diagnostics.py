"""``madata diagnose``: statistics on data whose truth is known, the report, bad input."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

import madata
from cli.app import app
from madata.diagnostics import action_coverage, action_dependence, behaviour_mix, diagnose, render_html, write_report
from madata.errors import SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete

runner = CliRunner()
mujoco = pytest.mark.skipif(importlib.util.find_spec("gymnasium_robotics") is None, reason="needs madata[mujoco]")
FAST = dict(groups=1024, permutations=20)  # the defaults but fewer groups: small test datasets


# ---------------------------------------------------------------- synthetic data with known dependence


def _synthetic(path, rho: float, episodes: int = 40, T: int = 250, seed: int = 0, nan_at=None):
    """Two agents acting on a 3-d state: a_i = tanh(W_i s) + 0.3 (sqrt(rho) xi + sqrt(1 - rho) eps_i).

    ``xi`` is shared by both agents at every step, so rho is the correlation of the parts of
    their actions that the state does not explain: 0 means conditionally independent given the state.
    """
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(99).standard_normal((2, 2, 3)) * 1.5
    agents = [AgentSpec(f"agent_{i}", Box.make(-3, 3, (3,)), Box.make(-3, 3, (2,))) for i in range(2)]
    with madata.create(path, agents, state_space=Box.make(-3, 3, (3,))) as w:
        for e in range(episodes):
            s = rng.uniform(-1, 1, (T + 1, 3)).astype(np.float32)
            xi = rng.standard_normal((T, 2))
            acts = {}
            for i in range(2):
                noise = np.sqrt(rho) * xi + np.sqrt(1 - rho) * rng.standard_normal((T, 2))
                acts[f"agent_{i}"] = np.clip(np.tanh(s[:-1] @ W[i].T) + 0.3 * noise, -3, 3).astype(np.float32)
            obs = {a.id: s.copy() for a in agents}
            if nan_at is not None and e == nan_at[0]:
                obs["agent_1"][nan_at[1], 0] = np.nan
            trunc = np.zeros(T, bool)
            trunc[-1] = True
            w.add_episode(
                obs=obs,
                actions=acts,
                rewards=rng.standard_normal(T),
                terminated=np.zeros(T, bool),
                truncated=trunc,
                state=s,
            )
    return path


def _copy(src: madata.Dataset, path, times: int = 1, actions=None):
    """Write ``src``'s episodes ``times`` times over into ``path``; ``actions(e, ep)`` may replace an episode's actions."""
    with madata.create(path, src.agents, state_space=src.state_space, reference_scores=src.meta.reference_scores) as w:
        for _ in range(times):
            for ep in src.iter_episodes():
                w.add_episode(
                    obs=ep.obs,
                    actions=actions(ep) if actions else ep.actions,
                    rewards=ep.rewards,
                    terminated=ep.terminated,
                    truncated=ep.truncated,
                    state=ep.state,
                    behaviour=ep.behaviour if any(ep.behaviour.values()) else None,
                )
    return madata.open(path)


def _dependence(ds: madata.Dataset) -> dict:
    return diagnose(ds, **FAST)["dependence"]["pairs"][0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {rho: madata.open(_synthetic(root / f"rho{rho}", rho)) for rho in (0.0, 0.3, 0.8)}


def test_dependence_orders_shared_noise(synthetic):
    """Truth: rho = 0 conditionally independent, 0.3 and 0.8 increasingly dependent given the state."""
    res = {rho: _dependence(ds) for rho, ds in synthetic.items()}
    assert res[0.0]["excess"] < 0.01  # curvature of tanh inside a neighbourhood leaves a little
    assert res[0.3]["excess"] > 0.05 and res[0.8]["excess"] > 0.4
    # the excess reads as the squared correlation of the unexplained parts (rho ** 2 here)
    assert abs(res[0.8]["excess"] - 0.8**2) < 0.1 and abs(res[0.3]["excess"] - 0.3**2) < 0.05
    assert res[0.3]["p_value"] == res[0.8]["p_value"] == 1 / 21  # above every shuffled copy
    for r in res.values():
        assert len(r["null"]) == 20 and r["null_std"] > 0


def test_shuffled_actions_match_their_null(synthetic, tmp_path):
    """Shuffle agent_1's actions among similar states (cells of the state): dependence drops to the null."""
    src = synthetic[0.8]
    tr = src.transitions(fields=["state", "action", "episode_id"])
    cell = np.zeros(len(tr["state"]), dtype=np.int64)
    for c in range(3):
        cell = cell * 6 + np.clip(((tr["state"][:, c] + 1) / 2 * 6).astype(int), 0, 5)
    a1 = tr["action/agent_1"]
    shuffled = a1.copy()
    rng = np.random.default_rng(5)
    for c in np.unique(cell):
        rows = np.flatnonzero(cell == c)
        shuffled[rows] = a1[rng.permutation(rows)]
    ds = _copy(
        src,
        tmp_path / "shuffled",
        actions=lambda ep: {"agent_0": ep.actions["agent_0"], "agent_1": shuffled[tr["episode_id"] == ep.id]},
    )
    before, after = _dependence(src), _dependence(ds)
    assert before["excess"] > 0.4
    assert abs(after["z"]) < 3 and after["p_value"] > 0.05 and abs(after["excess"]) < 0.005


def test_dependence_is_seeded(synthetic):
    ds = synthetic[0.3]
    a, b, c = (diagnose(ds, seed=s, **FAST)["dependence"] for s in (0, 0, 1))
    assert a == b and a["seed"] == 0 and c["seed"] == 1
    assert a["pairs"][0]["statistic"] != c["pairs"][0]["statistic"]


def test_dependence_needs_episodes():
    """A group takes one transition per episode: three episodes cannot fill one; skipped with the reason."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    out = action_dependence(x, {"a": x[:, :1], "b": x[:, 1:]}, np.repeat(np.arange(3), 100))
    assert out == {
        "skipped": "a group takes at most one transition per episode and needs at least 4; the data has 3 episode(s)"
    }


def test_dependence_null_is_calibrated_on_repeated_states():
    """Independent actions on a few repeated states (a discrete world): the statistic is one draw of its null."""
    rng = np.random.default_rng(0)
    N, pvals = 2000, []
    for trial in range(40):
        cond = rng.integers(0, 3, (N, 2)).astype(float)
        a = np.eye(3)[rng.integers(0, 3, N)]
        b = rng.standard_normal((N, 2))
        out = action_dependence(cond, {"a": a, "b": b}, np.arange(N) // 4, group_size=16, seed=trial)
        pvals.append(out["pairs"][0]["p_value"])
    # 40 exact permutation tests at 20 shuffles under the null: p-values about uniform, piled at neither end
    # (each tail below holds 2/21 of the mass: 3.8 expected, 10 or more has probability 0.006)
    assert 0.35 < np.mean(pvals) < 0.65, pvals
    assert sum(p <= 2 / 21 for p in pvals) < 10 and sum(p >= 20 / 21 for p in pvals) < 10, pvals


# ---------------------------------------------------------------- coverage


def test_coverage_joint_versus_per_agent():
    """Each agent covers its whole box; joint actions on the anti-diagonal cover few joint cells."""
    rng = np.random.default_rng(0)
    a0 = rng.uniform(-1, 1, (20000, 2)).astype(np.float32)
    box = Box.make(-1, 1, (2,))
    spaces = {"a": box, "b": box}
    tied = action_coverage({"a": a0, "b": -a0}, spaces, bins=4)
    free = action_coverage({"a": a0, "b": rng.uniform(-1, 1, (20000, 2))}, spaces, bins=4)
    assert tied["agents"]["a"]["fraction"] == tied["agents"]["b"]["fraction"] == 1.0
    assert tied["joint"]["cells"] == 256 and tied["joint"]["occupied"] == 16  # b's cell is a function of a's
    assert tied["independent"] == 256 and tied["ratio"] == 16 / 256
    assert free["joint"]["occupied"] == 256 and free["ratio"] == 1.0
    curve = tied["curve"]
    assert curve["transitions"][-1] == 20000 and curve["joint"][-1] == 16 and curve["independent"][-1] == 256
    assert all(np.diff(curve["joint"]) >= 0)


def test_duplicating_does_not_raise_coverage(synthetic, tmp_path):
    src = synthetic[0.3]
    twice = _copy(src, tmp_path / "twice", times=2)
    assert twice.num_transitions == 2 * src.num_transitions
    one, two = diagnose(src, **FAST)["coverage"], diagnose(twice, **FAST)["coverage"]
    assert one["joint"] == two["joint"] and one["agents"] == two["agents"]
    assert two["joint"]["occupied"] < 4**4  # not already full: there was room to rise


def test_discrete_grid_random(tmp_path):
    """The grid's uniformly random agents: independent given the position, every action pair covered."""
    from madata.collect import collect

    ds = collect("grid", tmp_path / "grid", mix=["random"], episodes=1000, seed=0)
    d = diagnose(ds, group_size=16, **FAST)
    pair = d["dependence"]["pairs"][0]
    assert abs(pair["z"]) < 3 and abs(pair["excess"]) < 0.01
    cov = d["coverage"]
    assert cov["agents"]["agent_0"] == {"cells": 3, "occupied": 3, "fraction": 1.0}
    assert cov["joint"]["occupied"] == 9 and cov["ratio"] == 1.0
    assert d["behaviour_mix"]["gap"] is None and d["behaviour_mix"]["mismatched_share"] == 0.0
    assert d["quality"]["normalized_scores"] is None  # no reference scores for the grid


# ---------------------------------------------------------------- behaviour mix and the gap


def test_gap_is_the_interaction_contrast(tmp_path):
    """Known returns: matched teams earn 10 / 20, mismatched ones 5 / 9 -> gap (10 + 20 - 5 - 9) / 2 = 8."""
    agents = [AgentSpec(f"agent_{i}", Box.make(-1, 1, (1,)), Box.make(-1, 1, (1,))) for i in range(2)]
    target = {
        ("medium", "medium"): 10.0,
        ("expert", "expert"): 20.0,
        ("medium", "expert"): 5.0,
        ("expert", "medium"): 9.0,
    }
    with madata.create(tmp_path / "ds", agents) as w:
        for e in range(16):
            combo = list(target)[e % 4]
            r = np.full(2, (target[combo] + (1 if e % 8 < 4 else -1)) / 2)  # +-1 around the combination's mean
            w.add_episode(
                obs={a.id: np.zeros((3, 1), np.float32) for a in agents},
                actions={a.id: np.zeros((2, 1), np.float32) for a in agents},
                rewards=r,
                terminated=np.array([False, True]),
                truncated=np.zeros(2, bool),
                behaviour=dict(zip(("agent_0", "agent_1"), combo, strict=True)),
            )
    mix = behaviour_mix(madata.open(tmp_path / "ds"))
    assert mix["gap"] == pytest.approx(8.0) and mix["mismatched_share"] == 0.5
    # pooled variance: squares 16 over 12 dof; each side averages two combination means of 4 episodes
    side = (1 / 4 + 1 / 4) / 2**2
    assert mix["gap_se"] == pytest.approx(np.sqrt(16 / 12 * (side + side)))
    assert {c["label"]: c["return_mean"] for c in mix["combinations"]}["agent_0=medium,agent_1=expert"] == 5.0
    assert all(c["share"] == 0.25 for c in mix["combinations"])


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    from madata.collect import collect

    root = tmp_path_factory.mktemp("collected")
    kw = dict(episodes=64, max_steps=100, seed=0)  # 64 episodes: groups of 64, one transition per episode
    return {
        "expert": collect("halfcheetah-2x3", root / "expert", mix=["expert"], **kw),
        "medium,expert": collect("halfcheetah-2x3", root / "mixed", mix=["medium", "expert"], **kw),
        "random": collect("halfcheetah-2x3", root / "random", mix=["random"], **kw),
    }


@mujoco
def test_collected_mixes(collected):
    """--mix expert (coordinated), medium,expert (uncoordinated), random: what each statistic says.

    Truth from the collector: only medium,expert has mismatched teams. Every agent draws its
    noise from its own stream and acts on the global state, so in all three the agents'
    actions are independent given the state: no dependence beyond the state's own curvature.
    """
    d = {k: diagnose(ds, **FAST) for k, ds in collected.items()}
    mixes = {k: v["behaviour_mix"] for k, v in d.items()}
    assert [mixes[k]["mismatched_share"] for k in ("expert", "medium,expert", "random")] == [0.0, 0.5, 0.0]
    assert mixes["expert"]["gap"] is None and "matched" in mixes["expert"]["gap_note"]
    assert mixes["random"]["gap"] is None
    m = {c["label"]: c["return_mean"] for c in mixes["medium,expert"]["combinations"]}
    contrast = (
        m["agent_0=medium,agent_1=medium"]
        + m["agent_0=expert,agent_1=expert"]
        - m["agent_0=medium,agent_1=expert"]
        - m["agent_0=expert,agent_1=medium"]
    ) / 2
    assert mixes["medium,expert"]["gap"] == pytest.approx(contrast)
    assert mixes["medium,expert"]["gap_normalized"] == pytest.approx(100 * contrast / (12135.0 + 280.178953))
    # quality: normalized scores with D4RL's HalfCheetah reference, ends by the 200-step limit
    assert d["expert"]["quality"]["normalized_scores"]["mean"] > d["random"]["quality"]["normalized_scores"]["mean"]
    assert d["random"]["quality"]["ends"] == {"terminated": 0, "truncated": 64}
    # dependence: random exactly independent -> at its null. SAC policies: only the excess their curvature
    # leaves at this density, well below what shared noise of correlation 0.3 gives (about 0.09)
    rnd = d["random"]["dependence"]["pairs"][0]
    assert abs(rnd["z"]) < 3 and abs(rnd["excess"]) < 0.01
    for k in ("expert", "medium,expert"):
        assert 0 <= d[k]["dependence"]["excess"] < 0.05, k
    assert d["expert"]["dependence"]["conditioning"] == "state"


# ---------------------------------------------------------------- bad input


def test_empty_dataset(tmp_path):
    agents = [AgentSpec(f"agent_{i}", Box.make(-1, 1, (2,)), Discrete(3)) for i in range(2)]
    madata.create(tmp_path / "empty", agents).close()
    with pytest.raises(SchemaError, match="empty: the dataset has no episodes"):
        diagnose(tmp_path / "empty")
    res = runner.invoke(app, ["diagnose", str(tmp_path / "empty")])
    assert res.exit_code == 2 and res.stderr.startswith("madata: error:") and res.stderr.count("\n") == 1
    assert "no episodes" in res.stderr


def test_empty_selection(synthetic):
    with pytest.raises(SchemaError, match="no episodes"):
        diagnose(synthetic[0.0].select(min_return=1e9))


def test_single_agent(tmp_path):
    agent = AgentSpec("solo", Box.make(-1, 1, (2,)), Box.make(-1, 1, (1,)))
    with madata.create(tmp_path / "solo", [agent]) as w:
        for _ in range(2):
            w.add_episode(
                obs={"solo": np.zeros((4, 2), np.float32)},
                actions={"solo": np.zeros((3, 1), np.float32)},
                rewards=np.ones(3),
                terminated=np.array([0, 0, 1], bool),
                truncated=np.zeros(3, bool),
            )
    with pytest.raises(SchemaError, match=r"needs at least 2; this dataset has 1 \(solo\)"):
        diagnose(tmp_path / "solo")
    res = runner.invoke(app, ["diagnose", str(tmp_path / "solo"), "--json"])
    assert res.exit_code == 2 and "at least 2" in res.stderr and res.stdout == ""


def test_nan_in_observations_never_enters(tmp_path):
    """Values that are not finite are refused where they enter, so diagnostics always see finite data."""
    with pytest.raises(SchemaError, match=r"episode 2: obs\['agent_1'\] holds NaN or inf at rows \[7\]"):
        _synthetic(tmp_path / "nan", 0.0, episodes=4, T=20, nan_at=(2, 7))


def test_bad_settings(synthetic):
    with pytest.raises(SchemaError, match="group_size must be an integer >= 4, got 2"):
        diagnose(synthetic[0.0], group_size=2)


# ---------------------------------------------------------------- report and CLI


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img alt="[a-z]+" src="data:image/png;base64,([^"]+)"', page)]


def test_report_and_json(synthetic, tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image", reason="the report's plots need matplotlib")

    path = synthetic[0.3].root
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["diagnose", str(path), "--report", str(out), "--json", "--groups", "256"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["settings"]["groups"] == 256 and d["dependence"]["groups"] <= 256 and d["settings"]["seed"] == 0
    page = out.read_text()
    embedded = json.loads(re.search(r"<script type='application/json' id='diagnosis'>(.*?)</script>", page, re.S)[1])
    assert embedded == d
    images = _images(page)
    assert len(images) == 4  # returns, dependence against its null, behaviour types, coverage curves
    for png in images:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib_image.imread(io.BytesIO(png))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels[..., :3].std() > 0.05
    text = runner.invoke(app, ["diagnose", str(path), "--groups", "256"])
    assert text.exit_code == 0 and "excess" in text.stdout and "miscoordination gap: not defined" in text.stdout
    # one policy per agent: one behaviour type each, in every form of the output
    assert [v["types"] for v in d["types"]["agents"].values()] == [1, 1] and d["types"]["settings"]["seed"] == 0
    assert "Behaviour types recovered without labels" in page and "one behaviour type per agent" in page
    assert "verdict: one behaviour type per agent" in text.stdout
    assert d["state_action_coverage"]["all_states"]["ratio"] > 0.8 and "Joint actions at similar states" in page
    assert "state-action coverage (share of the agents' action combinations" in text.stdout
    # 40 episodes, and fewer groups than requested: said first, in text and page; the settings show both
    assert d["warnings"][0].startswith("only 40 episodes") and "warning   only 40 episodes" in text.stdout
    used = d["dependence"]["groups"]
    assert used < 256 and f"used {used} groups of {d['dependence']['group_size']}" in d["warnings"][1]
    assert "requested 256 of 64" in d["warnings"][1] and "<p class='warning'>" in page
    assert f"<tr><td>groups</td><td>256</td><td>{used}</td></tr>" in page
    assert "(standard error" in text.stdout or "miscoordination gap: not defined" in text.stdout
    assert "+-" not in text.stdout and "+-" not in page  # std and standard error are named, never "+-"


def test_report_opens_in_headless_chromium(synthetic, tmp_path):
    """Every plot of the page decodes in a real browser (naturalWidth > 0).

    `make test` installs chromium where it can; CI (MADATA_REQUIRE_CHROMIUM=1) fails without it."""
    if shutil.which("chromium") is None:
        if os.environ.get("MADATA_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is missing but MADATA_REQUIRE_CHROMIUM=1: `make browser` installs it (as root)")
        pytest.skip("needs Debian's chromium (`make browser` installs it as root, or apt-get install chromium)")
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib")
    d = diagnose(synthetic[0.3], groups=256, permutations=5)
    page = render_html(d)
    probe = (
        "<script>window.addEventListener('load',()=>{const im=[...document.images];document.body.setAttribute("
        "'data-images',im.length+':'+im.filter(i=>i.complete&&i.naturalWidth>0).length);});</script>"
    )
    path = write_report(d, tmp_path / "r.html")
    path.write_text(page.replace("</body>", probe + "</body>"))
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-images="4:4"' in proc.stdout


# ---------------------------------------------------------------- state-action coverage


def _state_action_data(coordinated_where, n_episodes: int = 200, T: int = 50, seed: int = 0):
    """Two agents, 1-d actions of either sign; agent_1 copies agent_0's sign where ``coordinated_where(state)``
    holds, else acts independently. Returns the arrays state_action_coverage reads (return = first state value)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1, 1, (n_episodes * T, 2))
    a0 = rng.uniform(-1, 1, (len(s), 1))
    a1 = np.where(
        coordinated_where(s)[:, None], np.abs(rng.uniform(-1, 1, a0.shape)) * np.sign(a0), rng.uniform(-1, 1, a0.shape)
    )
    space = Box.make(-1, 1, (1,))
    episode = np.repeat(np.arange(n_episodes), T)
    return s, {"agent_0": a0, "agent_1": a1}, {"agent_0": space, "agent_1": space}, episode, s[:, 0]


@pytest.mark.parametrize(
    "where, ratio_all, ratio_top",
    [
        (lambda s: np.zeros(len(s), bool), 1.0, 1.0),  # independent agents: every combination of signs occurs
        (lambda s: np.ones(len(s), bool), 0.5, 0.5),  # one joint policy: 2 of the 4 sign combinations
        (lambda s: s[:, 0] > 0.5, None, 0.5),  # coordinated only where returns are high
    ],
)
def test_state_action_coverage_counts_combinations_seen_at_similar_states(where, ratio_all, ratio_top):
    from madata.diagnostics.coverage import state_action_coverage

    out = state_action_coverage(*_state_action_data(where), groups=64, group_size=16, bins=2, shuffles=5)
    assert out["group_size"] == 16 and out["all_states"]["groups"] == out["top_return_states"]["groups"] == 64
    if ratio_all is not None:
        assert out["all_states"]["ratio"] == pytest.approx(ratio_all, abs=0.05)
    else:  # seeded anywhere: mostly independent states
        assert out["all_states"]["ratio"] > 0.75
    assert out["top_return_states"]["ratio"] == pytest.approx(ratio_top, abs=0.05)
    assert out["top_return_states"]["independent_mean"] == pytest.approx(1.0, abs=0.05)


def test_state_action_coverage_needs_four_episodes():
    from madata.diagnostics.coverage import state_action_coverage

    out = state_action_coverage(*_state_action_data(lambda s: s[:, 0] > 0, n_episodes=3), groups=8)
    assert "one transition per episode" in out["skipped"]
    with pytest.raises(SchemaError, match="group_size >= 4"):
        state_action_coverage(*_state_action_data(lambda s: s[:, 0] > 0), group_size=2)
