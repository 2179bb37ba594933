"""What the configuration allows: deletes at all, writes during maintenance."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UNSUPPORTED, RegistryError


@dataclass
class Policy:
    delete_enabled: bool = True
    readonly: bool = False
    redirect: bool = True  # send blob GETs to the object store when it can serve them
    readonly_reason: str = "the registry is in read-only maintenance mode (storage.maintenance.readonly)"
    # Set while a garbage collection runs in read-only mode (on any replica): why writes wait.
    maintenance: str | None = None
    max_open_uploads: int | None = None  # upload sessions one repository may hold open at once

    def check_writable(self) -> None:
        if self.readonly:
            raise RegistryError(UNSUPPORTED, {"reason": "readonly"}, self.readonly_reason)
        if self.maintenance:
            raise RegistryError(UNSUPPORTED, {"reason": "maintenance"}, self.maintenance)

    def check_delete(self) -> None:
        if not self.delete_enabled:
            raise RegistryError(
                UNSUPPORTED,
                {"reason": "delete disabled"},
                "deletion is disabled (storage.delete.enabled: false)",
            )
        self.check_writable()
