"""The callers tests call services as: what the HTTP layers build for a client, and what
the command line passes."""

from wharf.services.caller import COMMAND_LINE, UNRESTRICTED, Caller

ANYONE = Caller.anonymous(UNRESTRICTED)  # a client of /v2 or /api/v0, as Wharf has no accounts yet
ADMIN = Caller.local(COMMAND_LINE)  # `wharf garbage-collect`, `wharf fsck`
