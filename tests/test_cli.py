"""The launcher end to end, as a user runs it: every experiment at smoke scale, resume, errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import launch, seeded_from
from edgeai_repro.core import provenance

EXPERIMENTS = sorted(
    f"{p.parent.name}/{p.stem}"
    for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*/*.yaml")
)
VERDICTS = {"held", "not_held", "inconclusive", "not_testable"}


def _cells(workdir: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (workdir / "outputs" / "cells").glob("*/*/result.json")}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _to_run(stderr_and_out: str) -> int:
    return int(re.search(r"(\d+) cells: (\d+) to run", stderr_and_out).group(2))


# Experiments that start from a prepared store, as a user's later experiments start from the first
# one's cells: DeepFusion's training experiments from Tables I-II (its devices and cells), the
# incentive experiments from the baselines (their default point is its ASOSA cells).
STORES = {"deepfusion/table1_2": "deepfusion_store", "incentive/baselines": "incentive_store"}
FROM_STORE = {
    **dict.fromkeys(
        ["deepfusion/transfer", "deepfusion/fig9_centralized", "deepfusion/ablations", "deepfusion/phase1"],
        "deepfusion_store",
    ),
    **{
        name: "incentive_store"
        for name in EXPERIMENTS
        if name.startswith("incentive/") and name not in STORES
    },
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_at_smoke_scale(request, workdir: Path, name: str) -> None:
    if name in STORES:  # the prepared store is this run; rebuilding it here re-checks the report
        workdir = request.getfixturevalue(STORES[name])
    elif name in FROM_STORE:
        seeded_from(request.getfixturevalue(FROM_STORE[name]), workdir)
    # launch() runs cells one after another; two experiments keep their parallel launcher (joblib),
    # which tests that path end to end for a Lightning paper and a simulation one.
    launcher = ["hydra/launcher=joblib"] if name in {"incentive/vs_theta", "aeria/properties"} else []
    # issue 39: the default experiment with a key a user sweeps on top of its own axes
    swept = ["aeria.pricing.core.c=1.5,5.357"] if name == "aeria/revenue_vs_users" else []
    run = launch([f"experiment={name}", "scale=smoke", *launcher, *swept], workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    paper, short = name.split("/")
    out = workdir / "results" / paper / short
    assert {"table.csv", "table.md", "claims.json"} <= {p.name for p in out.iterdir()}
    assert list(out.glob("*.png")), "every experiment draws its figure"
    # every Markdown row has the header's cells; no legend covers data, no two series look alike
    table_md = (out / "table.md").read_text()
    for block in re.findall(r"(?:^\|.*\n?)+", table_md, re.M):  # each run of table lines
        widths = {len(re.split(r"(?<!\\)\|", ln.strip().strip("|"))) for ln in block.splitlines()}
        assert len(widths) == 1, block
    assert json.loads((out / "run.json").read_text())["figure_problems"] == {}
    if swept:
        assert "| workload | c | users per provider |" in table_md
    claims = json.loads((out / "claims.json").read_text())
    assert claims and all(
        {"claim", "id", "kind", "verdict", "evidence", "n", "setting"} <= set(c) and c["verdict"] in VERDICTS
        for c in claims
    )
    # the typed schema of item 3: an interval with every comparative verdict, seeds when open
    for c in claims:
        if c["kind"] in {"superiority", "non_inferiority", "equivalence"} and c["verdict"] != "not_testable":
            assert len(c["ci"]) == 2, c
        if c["verdict"] == "inconclusive":
            assert "seeds_needed" in c, c
    # issue 30: what made the table: commit, lock and versions, of the report and of its cells
    record = json.loads((out / "run.json").read_text())
    made = record["provenance"]
    assert (
        made["commit"] and len(made["lock"]) == 64 and made["versions"]["peft"] and made["versions"]["scipy"]
    )
    assert (
        sum(e["cells"] for e in record["cell_environments"])
        == record["cells"] - record["failed"] - record["missing"]
    )
    assert f"Commit: `{provenance.short(made)}`" in (out / "table.md").read_text()
    assert "Scale: **smoke**" in (out / "table.md").read_text()
    if name == "deepfusion/table1_2":  # issue 21's bar: the reference rows and the knowledge-loss diagnostic
        import pandas as pd

        t = pd.read_csv(out / "table.csv")
        assert {"start", "prior"} <= set(t["method"])
        chain = [
            "device_log_ppl",
            "student_ppl_before",
            "student_ppl_after",
            "merged_log_ppl_before",
            "merged_log_ppl_after",
        ]
        ours = t[t["method"] == "deepfusion"].set_index("metric")["mean"]
        assert all(pd.notna(ours[m]) for m in chain) and (out / "knowledge_loss.png").exists()
    if short == "properties":
        import pandas as pd

        t = pd.read_csv(out / "table.csv")
        aeria = t[t["method"] == "auto+core"].set_index("metric")["total"]
        assert aeria["truthfulness_violations"] == 0 and aeria["ir_violations"] == 0
        assert aeria["envy_in_consensus_auctions"] == 0  # envy only where the estimates disagree
        assert aeria["users_checked"] > 0


def test_parallel_cells_that_share_devices_train_each_device_once(deepfusion_store: Path) -> None:
    """Issue 36: the prepared Tables I-II store is made by two jobs side by side on one cell store
    (conftest: deepfusion and ofa_kd first in each, both needing the same 6 devices, tokenizers and
    pretrained start), from an empty store: both finish, each device is trained by one job and read
    by the other (the log says which), and the whole table then finds every cell done."""
    log = (deepfusion_store / "done").read_text()
    trained = re.findall(r"training device (\d+)/6", log)
    together = sum(int(n) for n in re.findall(r"training (\d+) \w+ devices together", log))
    read = sum(int(n) for n in re.findall(r"(\d+) of \d+ \w+ devices were trained by another process", log))
    # Each device trained by one job only (without the locks both jobs train all six); the other
    # waited for them and read them (`read`: 6 unless it reached them only after they were stored).
    assert len(trained) + together == 6 and len(set(trained)) == len(trained), log[-3000:]
    assert read <= 6
    assert re.search(r"7 cells: 0 to run", log), log[-2000:]


def test_killed_sweep_resumes_without_losing_or_repeating_cells(workdir: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "edgeai_repro",
        "experiment=aeria/consensus_base",
        "scale=smoke",
        "hydra/launcher=basic",
    ]
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while len(_cells(workdir)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _cells(workdir)
    total = 8  # 4 bases c x 2 seeds
    assert 0 < len(done) < total, "the sweep must be killed halfway for this test to mean anything"
    resumed = launch(["experiment=aeria/consensus_base", "scale=smoke", "hydra/launcher=basic"], workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _to_run(resumed.stderr + resumed.stdout) == total - len(done)
    after = _cells(workdir)
    assert len(after) == total
    assert all(after[p] == t for p, t in done.items())  # finished cells were not computed twice


@pytest.fixture(scope="module")
def finished_properties(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished smoke run of aeria/properties, shared by the tests that must leave it untouched."""
    workdir = tmp_path_factory.mktemp("finished")
    ok = launch(["experiment=aeria/properties", "scale=smoke"], workdir)
    assert ok.returncode == 0, ok.stderr[-2000:]
    return workdir


@pytest.mark.parametrize(
    "override,key",
    [
        ("aeria.services=[auto,cloud]", "aeria.services"),
        ("aeria.market.users_per_provider=-5", "aeria.market.users_per_provider"),
        ("aeria.pricing.core.c=1", "aeria.pricing.core.c"),
        ("paths.outputs=/proc/x", "paths.outputs"),
        ("paths.results=/proc/x", "paths.results"),
        *([] if __import__("torch").cuda.is_available() else [("trainer=gpu", "trainer.accelerator")]),
    ],
)
def test_bad_override_stops_with_one_sentence_and_keeps_results(
    finished_properties: Path, override: str, key: str
) -> None:
    workdir = finished_properties
    results = workdir / "results" / "aeria" / "properties"
    before, cells = _digest(results), _cells(workdir)
    bad = launch(["experiment=aeria/properties", "scale=smoke", override], workdir)
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and key in last and "Traceback" not in bad.stderr
    assert _digest(results) == before and _cells(workdir) == cells


def test_corrupt_cell_file_is_set_aside_and_recomputed(workdir: Path) -> None:
    assert launch(["experiment=aeria/properties", "scale=smoke"], workdir).returncode == 0
    victim = Path(sorted(_cells(workdir))[0])
    victim.write_text("{ not json")
    again = launch(["experiment=aeria/properties", "scale=smoke"], workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _to_run(again.stderr + again.stdout) == 1
    assert json.loads(victim.read_text())["records"]
    assert list(victim.parent.glob("result.json.corrupt-*")), "the bad bytes are kept for inspection"


def test_failed_cells_leave_records_and_a_nonzero_exit(workdir: Path) -> None:
    """A pricing rule that raises inside every cell (added from outside src/): the cells fail one by
    one, each leaving its record, and the sweep ends with a non-zero exit and the gap in the table."""
    extra = workdir / "extra"
    (extra / "conf" / "aeria" / "pricing").mkdir(parents=True)
    (extra / "boom_rules.py").write_text(
        "from edgeai_repro.aeria.mechanisms import PricingRule\n\n\nclass Boom(PricingRule):\n"
        "    def price(self, a):\n        raise RuntimeError('boom')\n"
    )
    (extra / "conf" / "aeria" / "pricing" / "boom.yaml").write_text("boom:\n  _target_: boom_rules.Boom\n")
    run = launch(
        [
            "experiment=aeria/properties",
            "scale=smoke",
            "aeria/pricing=[core,boom]",
            f"hydra.searchpath=[file://{extra / 'conf'}]",
        ],
        workdir,
        env={"PYTHONPATH": f"{extra}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert run.returncode != 0
    assert "cells failed" in run.stderr.strip().splitlines()[-1]
    failures = list((workdir / "outputs" / "cells").glob("*/*/failure.json"))
    assert len(failures) == 2 and "Traceback" in json.loads(failures[0].read_text())["traceback"]
    table = (workdir / "results" / "aeria" / "properties" / "table.md").read_text()
    assert "## Failed or missing cells" in table


def _wandb_runs(workdir: Path) -> list[dict]:
    from wandb_reader import summarize

    return [
        summarize(p) for p in sorted((workdir / "outputs" / "multirun").rglob("offline-run-*/run-*.wandb"))
    ]


def test_wandb_offline_logs_each_cell_and_the_table(workdir: Path) -> None:
    run = launch(["experiment=aeria/properties", "scale=smoke", "logger=many"], workdir)
    assert run.returncode == 0, run.stderr[-2000:]
    runs = _wandb_runs(workdir)
    assert len(runs) == 3  # two cells and the report
    cells = [r for r in runs if r["job_type"] != "report"]
    assert {r["group"] for r in runs} == {"aeria/properties"}
    assert all(
        r["config"]["cell_id"] and r["history"] for r in cells
    )  # computed now: Lightning's metrics as history
    assert all(r["summary"]["auto+core/truthfulness_violations"] == 0 for r in cells)
    # issue 39: the launched keys are top-level config entries (W&B's runs table groups by them)
    assert sorted(r["config"]["seed"] for r in cells) == [0, 1], [r["config"].get("swept") for r in cells]
    assert all("seed" in r["config"]["swept"] for r in cells)
    report = next(r for r in runs if r["job_type"] == "report")
    assert any("truthfulness_violations" in str(k) for k in report["summary"]), report[
        "summary"
    ].keys()  # each metric's table as table.md shows it
    assert list((workdir / "outputs" / "multirun").rglob("metrics.csv"))


def test_wandb_publishes_cached_cells_once(request, workdir: Path) -> None:
    # convergence's cells are the baselines' ASOSA cells, computed without W&B in the prepared store
    seeded_from(request.getfixturevalue("incentive_store"), workdir)
    assert not _wandb_runs(workdir)
    again = launch(
        ["experiment=incentive/convergence", "scale=smoke", "hydra/launcher=basic", "logger=wandb"], workdir
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert _to_run(again.stderr + again.stdout) == 0  # nothing recomputed
    runs = _wandb_runs(workdir)
    cells = [r for r in runs if r["job_type"] != "report"]
    assert len(cells) == 2 and len(runs) == 3
    for r in cells:  # from the stored record: config, the ASOSA curves as history, the results as summary
        assert (
            r["job_type"] == "asosa"
            and r["config"]["cached"]
            and r["config"]["incentive"]["method"]["name"] == "asosa"
        )
        assert any("asosa/tp_utility" in row for row in r["history"])
        assert "tp_utility" in r["summary"] and "converged" in r["summary"]
    third = launch(
        ["experiment=incentive/convergence", "scale=smoke", "hydra/launcher=basic", "logger=wandb"], workdir
    )
    assert third.returncode == 0
    assert len(_wandb_runs(workdir)) == 4  # only the new report run: no cell is published twice


def test_rerun_does_no_new_work_and_publishes_to_wandb_quietly(workdir: Path) -> None:
    """W&B's per-run console output (banner, sync hints, run summary: about 20 lines a run) is
    silenced; the sweep prints its own summary, with where the runs are and the command that syncs
    them: fewer lines than cells, and one W&B run per cell."""
    first = launch(["experiment=aeria/consensus_base", "scale=smoke"], workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _cells(workdir)
    run = launch(["experiment=aeria/consensus_base", "scale=smoke", "logger=wandb"], workdir)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _to_run(run.stderr + run.stdout) == 0 and _cells(workdir) == before  # a re-run does no new work
    cells = [r for r in _wandb_runs(workdir) if r["job_type"] != "report"]
    printed = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(cells) == 8 and len(printed) < len(cells), printed
    assert any(
        line.startswith("W&B: 0 computed and 8 cached cell runs") and "wandb sync" in line for line in printed
    )


def test_a_swept_config_group_is_composed_by_hydra(workdir: Path) -> None:
    # The first cell keeps the base scale (a value-only fast path would apply); the second changes
    # the group, which only Hydra can compose.
    run = launch(["experiment=aeria/properties", "scale=smoke", "scale=smoke,tiny", "seed=0"], workdir)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads(next((workdir / "outputs" / "multirun").rglob("manifest.json")).read_text())
    scales = {
        json.loads(p.read_text())["scale"] for p in (workdir / "outputs" / "cells").glob("*/*/result.json")
    }
    assert len(manifest["cells"]) == 2 and scales == {"smoke", "tiny"}


def test_a_swept_nested_config_group_gives_distinct_cells(workdir: Path) -> None:
    run = launch(
        ["experiment=aeria/properties", "scale=smoke", "aeria/pricing=[core],[dop]", "seed=0"], workdir
    )
    assert run.returncode == 0, run.stderr[-2000:]
    methods = {
        r["method"]
        for p in (workdir / "outputs" / "cells").glob("*/*/result.json")
        for r in json.loads(p.read_text())["records"]
    }
    assert methods == {"auto+core", "auto+dop"}


def test_help_and_a_bare_launcher_list_the_experiments(workdir: Path) -> None:
    helped = launch(["--help"], workdir)
    assert helped.returncode == 0 and "powered by Hydra" not in helped.stdout
    bare = launch([], workdir)
    assert bare.returncode == 2 and "task.name" not in bare.stdout + bare.stderr
    for name in EXPERIMENTS:
        assert name in helped.stdout and name in bare.stdout
    # every component group with its options, read from conf/
    assert "deepfusion/student=" in helped.stdout and "tinyllama" in helped.stdout
    assert "aeria/pricing=" in helped.stdout and "incentive/method=" in helped.stdout


def test_a_launcher_setting_joblib_rejects_is_one_sentence(workdir: Path) -> None:
    run = launch(
        ["experiment=aeria/properties", "scale=smoke", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
        workdir,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: hydra.launcher.n_jobs=0")


def test_deepfusion_without_a_scale_stops_at_validation(workdir: Path) -> None:
    run = launch(["experiment=deepfusion/table1_2"], workdir)
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and "scale=tiny" in last and "bitsandbytes" not in last
    assert not (workdir / "outputs" / "cells").exists()


def test_a_sweep_prints_a_summary_not_one_line_per_cell(workdir: Path) -> None:
    run = launch(["experiment=aeria/properties", "scale=smoke", "hydra/launcher=joblib", "seed=0"], workdir)
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout + run.stderr
    assert "#0 :" not in text and "cells computed" in text
    verbose = launch(
        ["experiment=aeria/properties", "scale=smoke", "force=true", "verbose=true", "seed=0"], workdir
    )
    assert "#0 :" in verbose.stdout + verbose.stderr  # Hydra's job lines, on request


def test_submitit_local_runs_cells_in_jobs_and_builds_the_report(workdir: Path) -> None:
    """The cluster path: submitit's local executor pickles each cell into its own job folder and
    process, as submitit_slurm does; the cell store is shared and the report is built at the end."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run = launch(
        ["experiment=aeria/properties", "scale=smoke", "hydra/launcher=submitit_local"], workdir, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((workdir / "outputs" / "multirun").rglob(".submitit/*/*_result.pkl"))
    assert len(_cells(workdir)) == 2
    assert json.loads((workdir / "results" / "aeria" / "properties" / "claims.json").read_text())


def test_a_new_pricing_rule_is_one_yaml_and_one_class_outside_src(workdir: Path) -> None:
    """Adding a baseline: a YAML in a config folder of one's own (Hydra's search path) and a class in
    a module of one's own; nothing under src/ changes."""
    extra = workdir / "mine"
    (extra / "conf" / "aeria" / "pricing").mkdir(parents=True)
    (extra / "my_rules.py").write_text(
        "from edgeai_repro.aeria.mechanisms import PricingRule, _single_price\n"
        "import torch\n\n"
        "class HalfTop(PricingRule):\n"
        "    def price(self, a):\n"
        "        return _single_price(a, a.s.amax(-1, keepdim=True) / 2)\n"
    )
    (extra / "conf" / "aeria" / "pricing" / "half_top.yaml").write_text(
        "half_top:\n  _target_: my_rules.HalfTop\n"
    )
    env_path = f"{extra}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeai_repro",
            "experiment=aeria/properties",
            "scale=smoke",
            "hydra/launcher=basic",
            "aeria/pricing=[core,half_top]",
            f"hydra.searchpath=[file://{extra / 'conf'}]",
        ],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": env_path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = (workdir / "results" / "aeria" / "properties" / "table.md").read_text()
    assert "auto+half_top" in table and "auto+core" in table
