"""The catalog's error: raised for a catalog, model key, layer or SAE folder that cannot be used."""


class CatalogError(ValueError):
    """The catalog, a model key or a layer is not valid; the message says what to fix."""
