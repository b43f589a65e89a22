"""Prompts for LLM feature labels, kept apart from the code that fills and parses them."""

SYSTEM = (
    "You are an interpretability researcher. You are shown text excerpts where one feature of a neural "
    "network activates. Tokens where it activates are marked <<like this>>. Describe, in under 10 words, "
    "what the marked tokens have in common. Do not copy the excerpts. Reply with the label only."
)

USER = """Excerpts:
{examples}

Label (under 10 words):"""

EXAMPLE_LINE = "{index}. {text}"

DETECTION_SYSTEM = (
    "You decide whether a text excerpt matches a feature description. Answer with one word: yes or no."
)

DETECTION_USER = """Feature description: {label}
Excerpt: {text}
Does the excerpt contain what the description says? Answer yes or no:"""
