"""The /v2 API: parses OCI Distribution requests and formats responses; the rules live in services."""
