"""Delta Lake storage."""
