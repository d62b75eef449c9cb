-- The reseller views (the Customers page), projected from events.

-- Trigram indexes serve substring search (LIKE '%…%').
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Every registered account, as `account_registered` and `customer_added` describe it.
CREATE TABLE reporting.accounts (
    knox_id      text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('CUSTOMER', 'MSP')),
    company_name text NOT NULL,
    country      text NOT NULL
);

-- One row of a reseller's Customers page. A row exists when the reseller added the
-- account (`added`), or (issue #4) when the account holds virtual uploads from it.
-- The counters and LAST UPLOADED are maintained by device and MSP events as they arrive
-- (issue #3), never counted at query time.
CREATE TABLE reporting.customer_rows (
    reseller_id        text NOT NULL,
    knox_id            text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('CUSTOMER', 'MSP')),
    company_name       text NOT NULL,
    country            text NOT NULL,
    internal_reference text NOT NULL DEFAULT '',
    status             text NOT NULL
        CHECK (status IN ('PENDING_VERIFICATION', 'ACTIVE', 'INACTIVE')),
    added              boolean NOT NULL DEFAULT false,
    added_at           timestamptz,
    last_uploaded_at   timestamptz,
    uploaded_devices   bigint NOT NULL DEFAULT 0,
    devices            bigint NOT NULL DEFAULT 0,
    managing_msp_id    text NOT NULL DEFAULT '',
    -- What search matches: the three fields, lower-cased, separated by U+001F. No field
    -- holds control characters and the service rejects them in queries, so a match can
    -- never span two fields.
    search_text        text NOT NULL GENERATED ALWAYS AS (
        lower(company_name || chr(31) || internal_reference || chr(31) || knox_id)
    ) STORED,
    -- LAST UPLOADED as a sort key: "never" sorts after every real time in descending
    -- order (nulls last) and keeps keyset comparisons free of NULLs.
    last_uploaded_key  timestamptz NOT NULL GENERATED ALWAYS AS (
        COALESCE(last_uploaded_at, '-infinity'::timestamptz)
    ) STORED,
    PRIMARY KEY (reseller_id, knox_id)
);

-- The three keyset orders of the Customers page, each within one reseller.
CREATE INDEX customer_rows_by_name
    ON reporting.customer_rows (reseller_id, lower(company_name), knox_id);
CREATE INDEX customer_rows_by_last_uploaded
    ON reporting.customer_rows (reseller_id, last_uploaded_key DESC, knox_id);
CREATE INDEX customer_rows_by_devices
    ON reporting.customer_rows (reseller_id, devices DESC, knox_id);
-- Substring search.
CREATE INDEX customer_rows_search
    ON reporting.customer_rows USING gin (search_text gin_trgm_ops);
-- Events about one account (MSP links, account data) update its rows of every reseller.
CREATE INDEX customer_rows_by_account ON reporting.customer_rows (knox_id);

-- The last status an account's decision gave each reseller, kept whether or not the
-- reseller has added the account, so no `customer_status_changed` is lost.
CREATE TABLE reporting.approvals (
    reseller_id text NOT NULL,
    knox_id     text NOT NULL,
    status      text NOT NULL
        CHECK (status IN ('PENDING_VERIFICATION', 'ACTIVE', 'INACTIVE')),
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (reseller_id, knox_id)
);

-- Transactional outbox (see reseller-kit `outbox`).
CREATE TABLE reporting.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON reporting.outbox (id) WHERE published_at IS NULL;

-- Idempotent-consumer inbox (see reseller-kit `inbox`).
CREATE TABLE reporting.inbox (
    consumer   text NOT NULL,
    event_id   uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
