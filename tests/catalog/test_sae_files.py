"""A SAELens directory's cfg.json and safetensors weights checked from their headers, each fault named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sae_assets.catalog.sae_files import SaeFileError, check_directory
from tests.builders import save_topk_sae


@pytest.fixture
def sae_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sae"
    save_topk_sae(path, d_in=16, d_sae=32, k=4)
    return path


def _edit_cfg(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        cfg = json.loads((path / "cfg.json").read_text())
        change(cfg)
        (path / "cfg.json").write_text(json.dumps(cfg))
    return edit


def _cut_weights(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def cut(path: Path) -> None:
        weights = path / "sae_weights.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[:keep(len(data))])
    return cut


def test_a_saved_sae_passes(sae_dir: Path) -> None:
    cfg = check_directory(sae_dir)
    assert (cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["architecture"]) == (16, 32, 4, "topk")


@pytest.mark.parametrize(
    ("fault", "file", "message"),
    [
        (_edit_cfg(lambda c: c.update(d_sae="abc")), "cfg.json", r"'d_sae' must be a positive integer, got \"abc\" "
         r"\(text\)"),
        (_edit_cfg(lambda c: c.pop("d_in")), "cfg.json", r"has no 'd_in' \(the SAE's input width\)"),
        (_edit_cfg(lambda c: c.update(d_in=None)), "cfg.json", r"'d_in' must be a positive integer, got null:"),
        (_edit_cfg(lambda c: c.update(d_in=True)), "cfg.json", r"'d_in' must be a positive integer, got true"),
        (_edit_cfg(lambda c: c.update(k=[4])), "cfg.json", r"'k' must be a positive integer, got \[4\] \(a list\)"),
        (_edit_cfg(lambda c: c.update(architecture=3)), "cfg.json", r"'architecture' must be text"),
        (lambda p: (p / "cfg.json").write_text("[1]"), "cfg.json", r"holds a list, not a JSON object"),
        (lambda p: (p / "cfg.json").write_text("{d_in: 1"), "cfg.json", r"is not readable JSON"),
        (_cut_weights(lambda n: n - 100), "sae_weights.safetensors",
         r"is truncated or corrupt: the file is [\d,]+ bytes but its safetensors header describes [\d,]+"),
        (_cut_weights(lambda n: 20), "sae_weights.safetensors", r"truncated or not a safetensors file \(20 bytes"),
        (_cut_weights(lambda n: 3), "sae_weights.safetensors", r"\(3 bytes, less than its 8-byte header length\)"),
        (lambda p: (p / "sae_weights.safetensors").write_bytes(b"not a safetensors file at all"),
         "sae_weights.safetensors", r"truncated or not a safetensors file"),
        (_edit_cfg(lambda c: c.update(d_sae=64)), "", r"cfg.json says d_sae=64 but W_dec in sae_weights.safetensors "
         r"has shape \[32, 16\]"),
        (lambda p: (p / "sae_weights.safetensors").unlink(), "", r"has no sae_weights.safetensors"),
    ],
)
def test_each_fault_names_the_file_and_the_field(sae_dir: Path, fault: Callable[[Path], None], file: str,
                                                  message: str) -> None:
    fault(sae_dir)
    with pytest.raises(SaeFileError, match=message) as err:
        check_directory(sae_dir)
    assert str(sae_dir / file) in str(err.value)
