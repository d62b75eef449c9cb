-- Transactional outbox (see reseller-kit `outbox`).
CREATE TABLE msp.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON msp.outbox (id) WHERE published_at IS NULL;

-- Idempotent-consumer inbox (see reseller-kit `inbox`).
CREATE TABLE msp.inbox (
    consumer   text NOT NULL,
    event_id   uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
