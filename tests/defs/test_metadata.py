from __future__ import annotations

from sae_assets.defs.metadata import md_text


def test_outside_text_stays_text_in_markdown_tables() -> None:
    assert md_text('<script>alert(1)</script> a|b\nc') == "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b⏎c"
    assert md_text(None) == ""
