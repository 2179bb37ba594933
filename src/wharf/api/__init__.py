"""The /api/v0 admin API (DTR-compatible paths and bodies), on FastAPI for its OpenAPI document."""
