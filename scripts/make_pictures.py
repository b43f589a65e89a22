"""Make the README's pictures from the demo's lake, through headless Chromium (Debian's ``chromium``).

    .venv/bin/python scripts/make_pictures.py            # after the demo; writes docs/images/*.png

It starts the README's servers on free ports over ``$DAGSTER_HOME`` (default ``dagster_home/``) and its lake:
`dagster dev -w workspace.yaml` for the asset graph and the `alignment_report` plot, and the viewer for the 3-D map
and a feature page (the layer's best-scoring LLM-labelled feature). Nothing is written to the lake or the instance.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import requests

REPO = Path(__file__).resolve().parent.parent
MODEL, LAYER = "smollm2-135m@demo-res", 6
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                 "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage"]
log = logging.getLogger("make_pictures")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(argv: list[str], ready_url: str, env: dict[str, str], timeout_s: float = 240) -> Iterator[None]:
    """``argv`` in the repo root until ``ready_url`` answers; its process group stopped afterwards."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if requests.get(ready_url, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(argv)} did not answer at {ready_url}")
            time.sleep(0.5)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def best_feature(lake: Path) -> int:
    """The layer's LLM-labelled feature with the highest detection score (its page reads best)."""
    labels = pl.read_delta(str(lake / "feature_labels")).filter(
        (pl.col("model") == MODEL) & (pl.col("layer") == str(LAYER)) & pl.col("score_llm").is_not_null())
    if labels.is_empty():
        raise SystemExit(f"no LLM labels for {MODEL} layer {LAYER} under {lake}: run the demo first")
    return int(labels.sort("score_llm", descending=True)["feature"][0])


def shoot_dagster(page, url: str, out: Path) -> None:  # noqa: ANN001 (a Playwright page)
    """The global asset lineage with every stage group expanded, and alignment_report's SFAL plot."""
    page.goto(f"{url}/asset-groups")
    try:  # Dagster's first-visit newsletter dialog
        page.get_by_role("button", name="Skip").click(timeout=15_000)
    except Exception:  # noqa: BLE001 (no dialog this time)
        pass
    page.get_by_role("button", name="settings", exact=True).click(timeout=90_000)
    page.get_by_role("menuitem", name="unfold_more Expand all groups").click()
    page.get_by_role("button", name="Hide navigation").click()
    page.locator("button:has([aria-label='panel_show_right'])").click()  # the group tree beside the graph
    page.reload()  # the graph fits itself to the expanded groups on load
    page.wait_for_selector("text=optimized_prompts", timeout=90_000)
    page.locator("button:has([aria-label='zoom_out'])").click()
    page.wait_for_timeout(2_000)
    page.screenshot(path=str(out / "asset-graph.png"), clip={"x": 370, "y": 95, "width": 1230, "height": 1110})
    page.goto(f"{url}/assets/alignment_report")
    page.get_by_text("[Show Markdown]").click(timeout=90_000)  # the plot in the latest materialization's metadata
    page.wait_for_selector("img[src^='data:image/png']", timeout=30_000)
    page.wait_for_timeout(1_000)
    page.locator("[role=dialog]").last.screenshot(path=str(out / "sfal-report.png"))


def shoot_viewer(page, url: str, feature: int, out: Path) -> None:  # noqa: ANN001 (a Playwright page)
    page.goto(f"{url}/?model={MODEL}&layer={LAYER}")
    page.wait_for_selector("body[data-ready='1']", timeout=90_000)
    page.wait_for_timeout(2_000)
    page.screenshot(path=str(out / "feature-map.png"))
    page.goto(f"{url}/?model={MODEL}&layer={LAYER}&feature={feature}")
    page.wait_for_selector(f"#feature[data-feature='{feature}'][data-state='ready']", timeout=90_000)
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(out / "feature-page.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="where the PNGs go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from playwright.sync_api import sync_playwright

    home = Path(os.environ.get("DAGSTER_HOME", REPO / "dagster_home")).resolve()
    lake = Path(os.environ.get("SAE_ASSETS_LAKE", home / "lake"))
    feature = best_feature(lake)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH (as root: apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "SAE_ASSETS_AUTOMATION": "stopped"}
    ui, viewer = free_port(), free_port()
    venv_bin = Path(sys.executable).parent
    with server([str(venv_bin / "dagster"), "dev", "-w", "workspace.yaml", "--port", str(ui)],
                f"http://127.0.0.1:{ui}/server_info", env), \
            server([sys.executable, "-m", "sae_assets.viewer", "--port", str(viewer), "--lake", str(lake)],
                   f"http://127.0.0.1:{viewer}/", env), \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        shoot_dagster(page, f"http://127.0.0.1:{ui}", args.out)
        shoot_viewer(page, f"http://127.0.0.1:{viewer}", feature, args.out)
        browser.close()
    log.info("wrote %s", ", ".join(sorted(p.name for p in args.out.glob("*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
