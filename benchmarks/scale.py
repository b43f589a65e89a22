"""Each asset's time and peak memory at SAE widths of 2k-32k latents: the ``analyze_sae`` job, end to end.

    .venv/bin/python benchmarks/scale.py                               # widths 2,048 8,192 16,384 32,768, layer 4
    .venv/bin/python benchmarks/scale.py --widths 2048 8192 --keep     # keep the temporary homes, lakes and logs
    .venv/bin/python benchmarks/scale.py --gemma /tmp/gemma-sae --layer 12 --out benchmarks/results/scale-gemma.md

``--gemma`` runs instead a 16k SAE trained on Gemma 3 270M (``benchmarks/gemma_sae.py``), loaded by hub ids from a
hub-shaped server (``benchmarks/scale_gemma.py``).

For the embedded default (SmolLM2-135M-Instruct, d_model 576) it builds GemmaScope-shaped JumpReLU SAEs of each
width (``benchmarks/scale_saes.py``: random unit decoder rows, thresholds calibrated on real activations to a mean
L0 of ~80), writes a catalog naming them (``sae: {source: local}``, with Neuronpedia ids) and serves every width's
explanations from a Neuronpedia-shaped server on 127.0.0.1. Then, per width and one at a time, a fresh Python
process runs ``analyze_sae`` for the partition with the cpu budget profile (``sae_assets/defs/budgets.py``), in a
temporary DAGSTER_HOME and lake. The parent samples the child's resident memory (psutil, every 0.2 s) and, after the
run, attributes the samples to steps by the STEP_START / STEP_SUCCESS / STEP_FAILURE timestamps of the run's event
log. A child above ``--max-rss-gb`` is killed. The SAEs are random, so the explained-variance floor is lowered
(``--ev-floor``) and the blocking checks do not stop the run.

One table: per width x step (asset checks summed in one row) wall seconds, peak RSS of the process during the step,
the bytes of its tables' partitions on disk (``<lake>/<table>/model=<key>/layer=<layer>/``) and key figures; then a
row for the whole run (peak RSS, status). A failure shows in the status column (first line of the error). The table
also goes to ``--out`` (default ``benchmarks/results/scale.md``, kept in git as the record of the last measurement,
with the date and core count in its title; re-running overwrites it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale_saes import explanation_batches, model_key, write_catalog  # noqa: E402
from tests.neuronpedia_server import NeuronpediaServer  # noqa: E402

NOTES = {"tokens_per_second": "tok/s", "l0": "L0", "explained_variance": "EV", "features_labelled": "labelled",
         "labels_per_second": "labels/s", "features_explained": "explained", "n_kept": "kept", "n_clusters": "clusters",
         "targets": "targets", "knn_seconds": "knn s", "umap_seconds": "umap s", "mean_ndcg": "NDCG",
         "records": "records", "wins_explanation": "Neuronpedia wins", "mean_score": "label score",
         "edges": "map edges", "ce_loss_score": "CE loss score", "delta_lm_loss": "delta LM loss"}


def child(key: str, layer: int, tokens: int | None) -> None:
    """In the fresh process: run analyze_sae for one partition; print the run id and success as JSON."""
    import dagster as dg

    from sae_assets.definitions import defs
    from sae_assets.defs.partitions import partition_key, register_models

    instance = dg.DagsterInstance.get()
    register_models(instance, [key])
    job = defs.resolve_job_def("analyze_sae")
    # The budgets are the partition's profile (cpu here: the demo's); only the scan's tokens may be set.
    config = {} if tokens is None else {"ops": {"activation_scan": {"config": {"max_tokens": tokens}}}}
    result = job.execute_in_process(instance=instance, partition_key=partition_key(key, layer), run_config=config,
                                    raise_on_error=False)
    print(json.dumps({"run_id": result.run_id, "success": result.success}), flush=True)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_child(work: Path, env: dict, key: str, layer: int, tokens: int | None, max_rss: float, timeout_s: float):
    """Start the child, sample its RSS every 0.2 s; returns (samples [(t, bytes)], wall seconds, problem or None)."""
    cmd = [sys.executable, __file__, "--child", key, "--layer", str(layer)]
    cmd += ["--tokens", str(tokens)] if tokens else []
    with open(work / "run.log", "w") as log:
        popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc, samples, problem, start = psutil.Process(popen.pid), [], None, time.time()
        while popen.poll() is None:
            rss = tree_rss(proc)
            samples.append((time.time(), rss))
            if rss > max_rss or time.time() - start > timeout_s:
                problem = (f"killed: RSS {rss / 2**30:.1f} GB > {max_rss / 2**30:g} GB" if rss > max_rss
                           else f"killed: over {timeout_s:.0f} s")
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
                break
            time.sleep(0.2)
    wall = time.time() - start
    if problem is None and popen.returncode != 0:
        lines = [x for x in (work / "run.log").read_text(errors="replace").splitlines() if x.strip()]
        problem = f"exit {popen.returncode}: {lines[-1][:160] if lines else ''}"
    return samples, wall, problem


def partition_bytes(lake: Path, table: str, key: str, layer: int) -> int:
    total = 0
    for model_dir in (lake / table).glob("model=*"):
        if unquote(model_dir.name.removeprefix("model=")) == key:
            total += sum(f.stat().st_size for f in model_dir.glob(f"layer={layer}/**/*") if f.is_file())
    return total


def first_line(text: str | None) -> str:
    """The first non-empty line, without the exception's module path (``dagster._core...Failure:`` -> ``Failure:``)."""
    line = next((x.strip() for x in (text or "").splitlines() if x.strip()), "")
    return re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", line)[:160]


def _step(key: str) -> dict:
    return {"step": key, "start": None, "end": None, "status": "not run", "tables": [], "notes": {},
            "failed_checks": [], "is_asset": False, "seconds": None, "rss": None, "bytes": {}}


def step_rows(home: Path, lake: Path, key: str, layer: int, samples: list) -> tuple[list[dict], str, str | None]:
    """Rows per step from the run's event log, in start order; returns (rows, run status, run error)."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(limit=1)
    if not runs:
        return [], "NO RUN", None
    run, steps, run_error = runs[0], {}, None
    for snap in instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).steps:
        steps[snap.key] = _step(snap.key)
        steps[snap.key]["is_asset"] = any(o.properties and o.properties.asset_key for o in snap.outputs)
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            run_error = first_line(event.message or entry.user_message)
        if not entry.step_key:
            continue
        step = steps.setdefault(entry.step_key, _step(entry.step_key))
        if kind == "STEP_START":
            step["start"], step["status"] = entry.timestamp, "running"
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            step["end"] = entry.timestamp
            error = event.step_failure_data.error if kind == "STEP_FAILURE" else None
            step["status"] = "ok" if kind == "STEP_SUCCESS" else "FAILED: " + first_line(
                error.message if error else entry.message)
        elif kind == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            rows = mat.metadata.get("dagster/row_count")
            step["tables"].append((mat.asset_key.path[-1], rows.value if rows else None))
            for name, label in NOTES.items():
                if name in mat.metadata and isinstance(mat.metadata[name].value, int | float):
                    value = mat.metadata[name].value
                    step["notes"][label] = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        elif kind == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            step["failed_checks"].append(event.event_specific_data.check_name)
    last = samples[-1][0] if samples else time.time()
    for step in steps.values():
        if step["start"] is None:
            continue
        end = step["end"] or last
        inside = [r for t, r in samples if step["start"] <= t <= end]
        nearest = min(samples, key=lambda s: abs(s[0] - end))[1] if samples else None
        step["seconds"], step["rss"] = end - step["start"], max(inside) if inside else nearest
        step["bytes"] = {t: partition_bytes(lake, t, key, layer) for t, _ in step["tables"]}
    ordered = sorted(steps.values(), key=lambda s: (s["start"] is None, s["start"] or 0, s["step"]))
    return ordered, run.status.value, run_error


def gb(n: float | None) -> str:
    return "" if n is None else f"{n / 2**30:.2f}"


def render(results: list[dict]) -> str:
    lines = ["| d_sae | step | status | seconds | peak RSS GB | on disk | notes |", "|---|---|---|---|---|---|---|"]
    for res in results:
        d, rows = res.get("label") or f"{res['d_sae']:,}", res["rows"]
        for r in (r for r in rows if r["is_asset"]):
            disk = ", ".join(f"{t} {r['bytes'].get(t, 0) / 2**20:.1f} MB" + (f" ({n:,} rows)" if n is not None else "")
                             for t, n in r["tables"])
            notes = ", ".join(f"{k} {v}" for k, v in r["notes"].items())
            secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
            lines.append(f"| {d} | {r['step']} | {r['status']} | {secs} | {gb(r['rss'])} | {disk} | {notes} |")
        checks = [r for r in rows if not r["is_asset"]]
        if checks:
            ran = [r for r in checks if r["seconds"] is not None]
            failed = [c for r in checks for c in r["failed_checks"]]
            failed += [f"{r['step']} ({r['status']})" for r in checks if r["status"].startswith("FAILED")]
            status = "; ".join(x for x in (f"{len(checks) - len(ran)} not run" if len(ran) < len(checks) else "",
                                           f"failed: {', '.join(failed)}" if failed else "") if x) or "ok"
            slow = max(ran, key=lambda r: r["seconds"], default=None)
            lines.append(f"| {d} | {len(checks)} asset checks | {status} | {sum(r['seconds'] for r in ran):.1f} | "
                         f"{gb(max((r['rss'] or 0 for r in ran), default=None))} | | "
                         + (f"slowest {slow['step']} {slow['seconds']:.1f} s |" if slow else " |"))
        total = sum(sum(r["bytes"].values()) for r in rows)
        lines.append(f"| {d} | **run** | **{res['status']}** | {res['wall']:.1f} | **{gb(res['peak'])}** | "
                     f"{total / 2**20:.1f} MB | SAE L0 {res['sae_l0']} (held-out tokens) |")
    return "\n".join(lines)


def summary(results: list[dict]) -> list[str]:
    """The issue's targets: peak RSS at 16k / 32k, scan throughput at 16k against 2k."""
    by = {r["d_sae"]: r for r in results}
    out = [f"- peak RSS at {d:,}: {gb(by[d]['peak'])} GB (target <= {t} GB)" for d, t in ((16384, 6), (32768, 10))
           if d in by]

    def rate(d: int) -> float | None:
        scan = next((r for r in by[d]["rows"] if r["step"] == "activation_scan"), None) if d in by else None
        value = scan["notes"].get("tok/s") if scan else None
        return float(value.replace(",", "")) if value else None

    for d in (8192, 16384, 32768):
        if rate(2048) and rate(d):
            out.append(f"- scan throughput at {d:,}: {rate(d) / rate(2048):.2f} x that at 2,048 "
                       "(target at 16,384: >= 0.6)")
    return out


def measure(work: Path, env: dict, key: str, d_sae: int, sae_l0: float, args: argparse.Namespace) -> dict:
    """Run analyze_sae for ``key`` at ``args.layer`` in a child process with ``env``; the result row."""
    samples, wall, problem = run_child(work, env, key, args.layer, args.tokens, args.max_rss_gb * 2**30,
                                       args.timeout_min * 60)
    rows, status, error = step_rows(work / "home", work / "lake", key, args.layer, samples)
    for row in rows:  # the step a killed child was in
        if problem and row["status"] == "running":
            row["status"] = problem
    status = problem or (status if not error else f"{status}: {error}")
    result = {"d_sae": d_sae, "rows": rows, "status": status, "wall": wall, "sae_l0": sae_l0,
              "peak": max((r for _, r in samples), default=None)}
    print(f"{d_sae:,}: {status} in {wall:.0f} s, peak RSS {gb(result['peak'])} GB", file=sys.stderr)
    return result


def run_env(work: Path, catalog: Path, ev_floor: str) -> dict:
    (work / "home").mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", work / "home" / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(work / "home"), "SAE_ASSETS_LAKE": str(work / "lake"),
            "SAE_ASSETS_CATALOG": str(catalog), "SAE_ASSETS_MIN_EXPLAINED_VARIANCE": ev_floor,
            "SAE_ASSETS_AUTOMATION": "stopped", "PYTHONUNBUFFERED": "1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[2048, 8192, 16384, 32768])
    parser.add_argument("--layer", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=None, help="scan max_tokens (default: the demo's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    parser.add_argument("--l0", type=float, default=80.0, help="target mean L0 of the SAEs")
    parser.add_argument("--max-rss-gb", type=float, default=16.0, help="kill a run whose RSS passes this")
    parser.add_argument("--timeout-min", type=float, default=90.0, help="kill a run that takes longer")
    parser.add_argument("--ev-floor", default="-inf", help="SAE_ASSETS_MIN_EXPLAINED_VARIANCE (random SAEs)")
    parser.add_argument("--gemma", type=Path, help="instead: the SAE benchmarks/gemma_sae.py wrote to this folder, on "
                        "Gemma 3 270M, served by a hub-shaped server (benchmarks/scale_gemma.py); --layer is its layer")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.layer, args.tokens)
    if args.gemma:
        from benchmarks import scale_gemma

        return scale_gemma.main(args)
    tmp = Path(tempfile.mkdtemp(prefix="sae-scale-"))
    print(f"work directory {tmp}", file=sys.stderr)
    try:
        start = time.time()
        built = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_saes.py"), "--out", str(tmp / "saes"),
                                "--layer", str(args.layer), "--l0", str(args.l0), "--widths", *map(str, args.widths)],
                               cwd=ROOT, capture_output=True, text=True)
        if built.returncode != 0:
            sys.exit(f"building the SAEs failed:\n{built.stderr[-3000:]}")
        saes = {int(d): info for d, info in json.loads(built.stdout.strip().splitlines()[-1]).items()}
        print(f"built {len(saes)} SAEs in {time.time() - start:.0f} s", file=sys.stderr)
        write_catalog(tmp / "catalog.yaml", {d: tmp / "saes" / str(d) for d in saes}, args.layer)
        results = []
        with NeuronpediaServer(explanation_batches(args.widths, args.layer), page_size=1000) as server:
            for d_sae in args.widths:
                work, key = tmp / f"run-{d_sae}", model_key(d_sae)
                env = {**run_env(work, tmp / "catalog.yaml", args.ev_floor), "NEURONPEDIA_S3_URL": server.url,
                       "NEURONPEDIA_API_URL": server.url}
                print(f"{d_sae:,}: running analyze_sae ({work / 'run.log'})", file=sys.stderr)
                results.append(measure(work, env, key, d_sae, saes[d_sae]["l0_heldout"], args))
        table = render(results)
        print(table)
        lines = summary(results)
        print("\n".join(lines))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# analyze_sae at scale ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
                            f"layer {args.layer}, scan tokens {args.tokens or 'demo default'})\n\n{table}\n\n"
                            + "\n".join(lines) + "\n")
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
