"""HTTP routes, one router per group. They speak HTTP and pydantic; `serving` calls the engine."""
