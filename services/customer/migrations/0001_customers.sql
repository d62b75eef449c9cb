-- Accounts registered by the platform, reseller customers and approvals.
CREATE TABLE customer.accounts (
    knox_id      text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('CUSTOMER', 'MSP')),
    company_name text NOT NULL,
    country      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A reseller added an account; the status is derived from `approvals`.
CREATE TABLE customer.reseller_customers (
    reseller_id        text NOT NULL,
    knox_id            text NOT NULL REFERENCES customer.accounts (knox_id),
    internal_reference text NOT NULL DEFAULT '',
    added_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reseller_id, knox_id)
);

-- An account's decision about a reseller, made whether or not the reseller added it.
CREATE TABLE customer.approvals (
    knox_id     text NOT NULL REFERENCES customer.accounts (knox_id),
    reseller_id text NOT NULL,
    approved    boolean NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (knox_id, reseller_id)
);

-- Transactional outbox (see reseller-kit `outbox`).
CREATE TABLE customer.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON customer.outbox (id) WHERE published_at IS NULL;

-- Idempotent-consumer inbox (see reseller-kit `inbox`).
CREATE TABLE customer.inbox (
    consumer   text NOT NULL,
    event_id   uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
