"""Optimized prompts: inputs searched to maximally activate selected features."""
