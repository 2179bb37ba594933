"""Services hold the registry's rules and know nothing of HTTP."""
