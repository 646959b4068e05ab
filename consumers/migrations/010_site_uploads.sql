-- Object storage (issue 21): each site's upload backlog as its last heartbeat reported it —
-- pages whose document is not stored yet (their events wait in the site's outbox), the bytes
-- to send, the age of the oldest and the uploader's last error. Heartbeats from agents
-- without uploads leave the defaults.
ALTER TABLE site_heartbeats
    ADD COLUMN IF NOT EXISTS upload_pending_pages    integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS upload_pending_bytes    bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS oldest_unuploaded_age_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS upload_error            text;
