"""The viewer is a small server over the lake: its process never loads torch, not even to answer a feature page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.viewer.test_feature_data import LAYER, MODEL

VIEWER_PROCESS = """
import sys
from pathlib import Path

from starlette.testclient import TestClient

import sae_assets.viewer.__main__ as cli
from sae_assets.viewer.server import build_app

lake, exports = sys.argv[1], Path(sys.argv[2])
assert cli.default_lake() and cli.default_exports(lake)
with TestClient(build_app(exports, lake_root=lake)) as client:
    page = client.get("/api/feature", params={"model": sys.argv[3], "layer": sys.argv[4], "feature": 4})
    assert page.status_code == 200, page.text
    assert all(v["status"] == "ok" for v in page.json()["sections"].values()), page.json()
    assert client.get("/api/search", params={"model": sys.argv[3], "layer": sys.argv[4], "q": "1"}).status_code == 200
    sae = client.get("/api/sae", params={"model": sys.argv[3], "layer": sys.argv[4]})
    assert sae.status_code == 200 and sae.json()["sections"]["densest"]["status"] == "ok", sae.text
    assert client.get("/data/models.json").status_code == 200
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_the_viewer_process_never_imports_torch(lake_dir: str, tmp_path: Path) -> None:
    """Imports what ``python -m sae_assets.viewer`` imports, builds its app and answers a feature page (every
    section: Phi partners, cosine neighbours...) and an SAE page, then lists the torch modules loaded: none."""
    done = subprocess.run([sys.executable, "-c", VIEWER_PROCESS, lake_dir, str(tmp_path / "exports"), MODEL,
                           str(LAYER)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]
