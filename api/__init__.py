"""HTTP layer: FastAPI app factory, v1 routes, auth, error rendering, admin UI."""
