"""How the OpenAPI schema documents pusher's own authentication scheme (drf-spectacular documents
DRF's own). Imported by pusher_site.api.urls, so it is registered before any schema is generated."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ScopedTokenScheme(OpenApiAuthenticationExtension):
    target_class = "pusher_site.api.auth.ScopedTokenAuthentication"
    name = "scopedTokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "pst_<43 characters>",
            "description": "A scoped API token (`Authorization: Bearer pst_...`): acts as its owner, sees the rows "
            "of its Kazoo accounts only (devices, tokens, deliveries, pushes; another account's row is a 404), "
            "reads User-Agent rules, and uses push apps, credentials and rule writes only where granted. "
            "Made by a superuser in the admin or at /api/v1/scoped-tokens/; the key is shown once.",
        }
