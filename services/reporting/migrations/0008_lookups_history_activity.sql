-- Issue #12 (DOMAIN.md "Finding devices, history and the activity log"): finding a
-- device by any identifier, its history, and the reseller's activity log. Every table
-- here is fed by events and is order-independent: each event adds facts keyed by what it
-- is about, and the reads put the facts in order.

-- A registration's other identifiers (IMEI 2, serial; canonical, at most 4), from its
-- upload: FindDevices and GetDeviceHistory find a device by any of them. Only devices
-- that have secondary identifiers have rows here.
ALTER TABLE reporting.registrations
    ADD COLUMN secondary_ids text[] NOT NULL DEFAULT '{}';
CREATE TABLE reporting.secondary_identifiers (
    identifier text NOT NULL,
    device_id  text NOT NULL,
    upload_id  uuid NOT NULL,
    PRIMARY KEY (identifier, device_id, upload_id)
);

-- Which deletion deleted a registration, and when (from `devices_deleted`). Kept apart
-- from `registrations` because the deletion may be projected before the upload.
CREATE TABLE reporting.registration_deletions (
    device_id   text NOT NULL,
    upload_id   uuid NOT NULL,
    deletion_id uuid NOT NULL,
    deleted_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, upload_id)
);

-- Every move of a registration by an MSP (`msp_devices_moved`); `registrations` keeps
-- only the newest holder.
CREATE TABLE reporting.registration_moves (
    device_id    text NOT NULL,
    upload_id    uuid NOT NULL,
    seq          bigint NOT NULL,           -- msp-link's `seq` of the move
    msp_id       text NOT NULL,
    from_knox_id text NOT NULL,
    to_knox_id   text NOT NULL,
    moved_at     timestamptz NOT NULL,
    PRIMARY KEY (device_id, upload_id, seq)
);

-- Every delink (`msp_customer_delinked`), not only the newest link fact: a device's
-- history names the delinks of the customer while it held the device, and a move
-- projected after a later delink lists that delink (`event_id`, its activity entry) in
-- the log of the moved devices' resellers.
CREATE TABLE reporting.delinks (
    customer_knox_id text NOT NULL,
    event_id         uuid NOT NULL,
    seq              bigint NOT NULL,
    msp_id           text NOT NULL,
    requested_by     text NOT NULL,
    delinked_at      timestamptz NOT NULL,
    PRIMARY KEY (customer_knox_id, seq)
);

-- The reseller's activity log, one row per action. `activity_id` is the upload ID, the
-- deletion ID, `move:<msp>:<seq>` for an MSP move, or the event ID. Several events may
-- add to one entry (a move's parts; a deletion's parts and its record): the counts add
-- up, the earliest time stays (`postgres::activity`). The summary a person reads is made
-- from these columns when the entry is read (`domain::activity`).
CREATE TABLE reporting.activities (
    reseller_id      text NOT NULL,
    activity_id      text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('UPLOAD', 'DELETION', 'CUSTOMER_ADDED',
                         'REFERENCE_UPDATED', 'APPROVAL_CHANGED', 'MSP_MOVE', 'MSP_DELINK')),
    actor            text NOT NULL,
    -- The customer the entry is about ('' for a deletion: see `activity_customers`).
    customer_knox_id text NOT NULL DEFAULT '',
    upload_id        uuid,
    deletion_id      uuid,
    accepted_count   bigint NOT NULL DEFAULT 0, -- uploads
    rejected_count   bigint NOT NULL DEFAULT 0, -- uploads: rejected; deletions: not found
    device_count     bigint NOT NULL DEFAULT 0, -- uploaded, deleted or moved devices
    -- A deletion's `devices_deleted` parts (0 when it deleted nothing): each portal is
    -- pending until it has answered for every part.
    part_count       integer NOT NULL DEFAULT 0,
    -- What the summary names besides the customer: an upload's order number, the new
    -- reference, the company name added, the status an approval gave, the MSP of a move
    -- or delink.
    detail           text NOT NULL DEFAULT '',
    PRIMARY KEY (reseller_id, activity_id)
);
CREATE INDEX activities_newest_first
    ON reporting.activities (reseller_id, occurred_at DESC, activity_id DESC);

-- Every customer an entry touches (a deletion or move touching several is listed under
-- each): the customer filter's keyset order. `occurred_at` repeats the entry's (kept
-- equal by the writes), so a filtered page is one index range.
CREATE TABLE reporting.activity_customers (
    reseller_id      text NOT NULL,
    customer_knox_id text NOT NULL,
    activity_id      text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    PRIMARY KEY (reseller_id, customer_knox_id, activity_id)
);
CREATE INDEX activity_customers_newest_first
    ON reporting.activity_customers (reseller_id, customer_knox_id, occurred_at DESC, activity_id DESC);
-- An entry's customers, read with every entry of a page (and kept at the entry's time by
-- the writes): without it each entry scans the reseller's part of the table.
CREATE INDEX activity_customers_by_entry
    ON reporting.activity_customers (reseller_id, activity_id);
