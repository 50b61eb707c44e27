"""A small Keycloak-compatible stand-in for the vantage6 5.x sandbox and tests.

Keycloak cannot be installed on these machines (it ships through registries they do not
reach), and HQ 5.0.3 will not start without one. This serves what HQ (through
python-keycloak 5.5.0) and the official 5.0.3 clients call — the realm's public key, the
token endpoint with the device flow, and the admin routes HQ uses for nodes and users — and
nothing more. It is not an identity provider: it binds 127.0.0.1 only and says so in every
page (see docs/v6.md).
"""

from dss_console.sources.v6x5.standin.realm import (
    PUBLIC_CLIENT,
    SEEDING_CLIENT,
    KeycloakReply,
    Lifespans,
    Realm,
)
from dss_console.sources.v6x5.standin.server import IdpStandin

__all__ = ["PUBLIC_CLIENT", "SEEDING_CLIENT", "IdpStandin", "KeycloakReply", "Lifespans",
           "Realm"]
