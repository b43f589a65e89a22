"""What several stages share: progress reporting, plots, the language model's hooks, ranking."""
