from __future__ import annotations

import pytest

from sae_assets.defs.metadata import md_text, viewer_link


def test_outside_text_stays_text_in_markdown_tables() -> None:
    assert md_text('<script>alert(1)</script> a|b\nc') == "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b⏎c"
    assert md_text(None) == ""


def test_viewer_links_follow_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAE_ASSETS_VIEWER_URL", raising=False)
    assert viewer_link("smollm2-135m@demo-res", 4).value == "http://127.0.0.1:8050/?model=smollm2-135m%40demo-res&layer=4"
    monkeypatch.setenv("SAE_ASSETS_VIEWER_URL", "https://viewer.example.org/sae/")
    assert viewer_link("m@x", 2, 17).value == "https://viewer.example.org/sae/?model=m%40x&layer=2&feature=17"
