"""Feature labels: LLM and keyword labels from activating examples, scored by held-out detection."""
