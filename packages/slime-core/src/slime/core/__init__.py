"""slime.core: The Slime Mold Transformer: pseudopods, chemotaxis, the organism, observability and the user-facing API."""

__all__: list[str] = []
