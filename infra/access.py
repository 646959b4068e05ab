"""A site's own Kafka user: SCRAM-SHA-512 credentials and ACLs that let it write site events
and dead letters and nothing else (no reads, no file-events, no other topic, no group).

The broker must run an authorizer (``stack.kafka_sasl`` for the local one); this runs with the
centre's (super) user from ``kafka.*``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sohoa.config import KafkaConfig, TopicsConfig
from sohoa.kafka_clients import make_admin

USER_PREFIX = "site-"
ITERATIONS = 8192  # SCRAM-SHA-512 iterations (Kafka's minimum is 4096)


def site_user(site_id: str) -> str:
    return f"{USER_PREFIX}{site_id}"


@dataclass(frozen=True)
class SiteAccess:
    site_id: str
    user: str
    password: str
    signing_secret: str

    def site_toml(self, bootstrap: str) -> str:
        """The site agent's part of its sohoa.toml."""
        return (f'[watcher]\nsite_id = "{self.site_id}"\n\n'
                f'[kafka]\nbootstrap = "{bootstrap}"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                f'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "{self.user}"\n'
                f'sasl_password = "{self.password}"\n\n'
                f'[identity]\nsite_secret = "{self.signing_secret}"\n')

    def centre_toml(self) -> str:
        """The line the centre's sohoa.toml needs to accept this site's records."""
        return f'[identity.sites]\n{self.site_id} = "{self.signing_secret}"\n'


def site_acls(user: str, topics: TopicsConfig) -> list:
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

    principal = f"User:{user}"
    return [ACL(principal, "*", op, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, topic))
            for topic in (topics.site_events, topics.dead_letters)
            for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE)]


def grant_site(kafka: KafkaConfig, topics: TopicsConfig, site_id: str,
               password: str | None = None, signing_secret: str | None = None) -> SiteAccess:
    """Create (or reset) the site's SCRAM user and its write-only ACLs."""
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    access = SiteAccess(site_id, site_user(site_id), password or secrets.token_urlsafe(24),
                        signing_secret or secrets.token_hex(32))
    admin = make_admin(kafka)
    try:
        errors = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            access.user, ScramMechanism.SCRAM_SHA_512, access.password,
            iterations=ITERATIONS)])
        failed = {u: e for u, e in (errors or {}).items() if e}
        if failed:
            raise RuntimeError(f"SCRAM credentials refused: {failed}")
        result = admin.create_acls(site_acls(access.user, topics))
        if result.get("failed"):
            raise RuntimeError(f"ACLs refused: {result['failed']}")
    finally:
        admin.close()
    return access
