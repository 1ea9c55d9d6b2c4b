"""The launcher's own help and experiment list (what `edgeai-repro --help` and a bare `edgeai-repro` print)."""

from __future__ import annotations

from pathlib import Path

PAPERS = {
    "aeria": "AERIA, auction-based pricing of multi-exit DNN inference at the edge (arXiv 2503.04521; abstract only)",
    "deepfusion": "DeepFusion, federated KD from on-device LLMs into a global MoE (arXiv 2602.14301; prints Tables I-II)",
    "incentive": "Hierarchical FL incentives: Stackelberg game + multi-agent DRL + ASOSA (arXiv 2509.10512)",
}


def experiments(conf: Path) -> list[tuple[str, str, str]]:
    """(name, command, one-line description) of every experiment file, from its header comments."""
    out = []
    for path in sorted((conf / "experiment").glob("*/*.yaml")):
        lines = [ln[1:].strip() for ln in path.read_text().splitlines()[:6] if ln.startswith("#")]
        command = next((ln for ln in lines if ln.startswith("edgeai-repro ")), "")
        about = next((ln for ln in lines[1:] if not ln.startswith(("edgeai-repro", "@package"))), "")
        out.append((f"{path.parent.name}/{path.stem}", command, about))
    return out


# The component groups a user swaps or sweeps (conf/<group>/<option>.yaml, each with a _target_).
GROUPS = (
    "aeria/pricing",
    "incentive/method",
    "deepfusion/method",
    "deepfusion/student",
    "deepfusion/teacher",
    "deepfusion/judge",
    "deepfusion/accounting",
)


def component_list(conf: Path) -> str:
    """One line per component group with its options, read from conf/ (a new YAML shows up here)."""
    return "\n".join(
        f"  {g + '=':24s} {' | '.join(sorted(p.stem for p in (conf / g).glob('*.yaml')))}"
        for g in GROUPS
        if (conf / g).is_dir()
    )


def experiment_list(conf: Path) -> str:
    lines = []
    for paper, about in PAPERS.items():
        lines.append(f"  {paper}: {about}")
        for name, command, desc in experiments(conf):
            if name.startswith(paper + "/"):
                scale = " (scale=tiny on a CPU)" if command.endswith("scale=tiny") else ""
                lines.append(f"    {name:34s} {desc}{scale}")
    return "\n".join(lines)


def help_text(conf: Path) -> str:
    return f"""edgeai-repro: one command per table or figure of three edge-AI papers, with the paper's numbers
(or claims) beside ours and a verdict per claim. A table is a Hydra multirun; a cell is one job.

Usage:
  edgeai-repro experiment=<paper>/<name> [scale=paper|tiny|smoke] [key=value ...]

Experiments (paper/name, what it reproduces):
{experiment_list(conf)}

Components (config groups; a list for aeria/pricing, deepfusion/student and deepfusion/teacher):
{component_list(conf)}

Scales:   paper (published sizes; the default), tiny (same code shrunk for a 2-core CPU), smoke (seconds)
Loggers:  logger=csv (default) | wandb | many (both); W&B runs offline without an API key
Trainers: trainer=cpu (default) | gpu | ddp_spawn
Launchers: hydra/launcher=basic (default) | joblib [hydra.launcher.n_jobs=N] | submitit_slurm (pip install -e ".[slurm]")
Other:    seed=range(0,5) replaces the seed sweep; force=true recomputes cached cells; verbose=true logs every job;
          paths.outputs=<dir> moves the cell store and run folders; --cfg job prints the composed config.

Results land in results/<paper>/<name>/ (table.csv, table.md, figures, claims.json, run.json); a re-run skips
finished cells. Each claim of the paper gets a verdict from an estimate and its 95% interval over seeds:
held | not_held | inconclusive (with the seeds that would decide it) | not_testable.

Example:
  edgeai-repro experiment=aeria/revenue_vs_users
  edgeai-repro experiment=deepfusion/table1_2 scale=tiny hydra/launcher=joblib hydra.launcher.n_jobs=2

Hydra's own help: edgeai-repro --hydra-help"""
