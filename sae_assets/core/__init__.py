"""Plain torch / polars / numpy computations; imports no Dagster."""
