-- Tern's queue in PostgreSQL, version 1.
-- Applied once, in a transaction, by tern_queue_pg::migrate (under an
-- advisory lock), and recorded in schema_migrations.

-- One row per queued message: envelope, bytes, hold flag, when it is due
-- (tern_queue::store::due_at of its recipients) and its lease, if any.
CREATE TABLE queue_messages (
    id            text    PRIMARY KEY,
    envelope      text    NOT NULL,           -- tern_queue::store::codec
    body          bytea   NOT NULL,
    data_len      bigint  NOT NULL,
    recipients    integer NOT NULL,
    held          boolean NOT NULL DEFAULT false,
    due_at        bigint  NOT NULL DEFAULT 0, -- Unix seconds
    lease_token   bigint,
    lease_expires bigint,                     -- Unix seconds
    lease_owner   text,
    committed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_messages_due ON queue_messages (due_at, id) WHERE NOT held;

-- The current state of each recipient with a recorded state (none: pending).
CREATE TABLE queue_recipients (
    message_id text    NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    state      text    NOT NULL,               -- tern_queue::store::codec
    final      boolean NOT NULL,
    PRIMARY KEY (message_id, idx)
);

-- Every state change, in order (for `tern queue show`).
CREATE TABLE queue_history (
    seq        bigserial PRIMARY KEY,
    message_id text      NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    idx        integer   NOT NULL,
    state      text      NOT NULL
);
CREATE INDEX queue_history_message ON queue_history (message_id, seq);

-- Notices sent (at most once per recipient and kind).
CREATE TABLE queue_notices (
    message_id text    NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    kind       text    NOT NULL,
    PRIMARY KEY (message_id, idx, kind)
);

-- Lease tokens: unique across every node.
CREATE SEQUENCE queue_lease_tokens;
