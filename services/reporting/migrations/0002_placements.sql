-- Issue #3: the registrations a reseller uploaded, where each is placed in the reseller's
-- Customers page (DOMAIN.md "What each portal shows"), the uploads placed under each row,
-- and the row counters kept from them as events arrive.

-- One row per registration (device, upload). A registration stays after its deletion
-- (`deleted`), because UPLOADS counts deleted devices.
--
-- Facts and placement: the upload's facts (`uploaded_to`, `uploaded_to_msp`) come from
-- `devices_uploaded`, the holder (`holder_knox_id`, `moved_by_msp`, `move_seq`) from the
-- upload and then from `msp_devices_moved` (issue #4). The placement columns
-- (`placed_knox_id`, `virtual`, `via_msp_id`) are derived from those facts and the
-- holder's MSP link by `domain::placement::place`, never written any other way; every
-- change of placement is applied to `upload_placements` and `customer_rows` as a delta.
-- `uploaded_to`, `uploaded_to_msp` and `placed_knox_id` may be NULL so that a move
-- projected before its upload (events of different services are not ordered) can keep
-- its facts until the upload's facts arrive; such a row is placed nowhere.
CREATE TABLE reporting.registrations (
    device_id        text NOT NULL,
    upload_id        uuid NOT NULL,
    reseller_id      text NOT NULL,
    id_kind          smallint NOT NULL CHECK (id_kind BETWEEN 1 AND 3), -- reseller.v1.DeviceIdKind
    model            text NOT NULL,
    uploaded_at      timestamptz NOT NULL,
    order_number     text NOT NULL,
    uploaded_to      text,                      -- the account the reseller uploaded to
    uploaded_to_msp  boolean,                   -- that account is an MSP
    holder_knox_id   text NOT NULL,             -- the account holding it now
    moved_by_msp     text NOT NULL DEFAULT '',  -- the MSP that last moved it ('' if never)
    move_seq         bigint NOT NULL DEFAULT 0, -- `seq` of that msp_devices_moved (0 if never): only a newer move applies
    placed_knox_id   text,                      -- the row of the reseller's list it is placed under
    virtual          boolean NOT NULL DEFAULT false,
    via_msp_id       text NOT NULL DEFAULT '',  -- for a virtual upload, the MSP it was uploaded to
    deleted          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (device_id, upload_id)
);

-- One row's live devices in the detail's order (newest upload first, then upload and
-- device ID): serves ListCustomerDevices' keyset pages and the customer CSV's cursor.
CREATE INDEX registrations_placed_live
    ON reporting.registrations (reseller_id, placed_knox_id, uploaded_at DESC, upload_id, device_id)
    WHERE NOT deleted;

-- Registrations deleted, remembered so that an upload (or, in issue #4, a move) projected
-- after its deletion never shows the device. Deletions are matched by (device, upload).
CREATE TABLE reporting.deleted_registrations (
    device_id text NOT NULL,
    upload_id uuid NOT NULL,
    PRIMARY KEY (device_id, upload_id)
);

-- The uploads placed under each row: one per (upload, placement). An ordinary upload has
-- one, under the account it was uploaded to; a virtual upload (issue #4) is the part of
-- an upload to an MSP placed under a delinked customer. Kept by deltas; a placement whose
-- `device_count` falls to 0 is removed.
CREATE TABLE reporting.upload_placements (
    reseller_id    text NOT NULL,
    upload_id      uuid NOT NULL,
    placed_knox_id text NOT NULL,
    uploaded_at    timestamptz NOT NULL,
    order_number   text NOT NULL,
    virtual        boolean NOT NULL,
    via_msp_id     text NOT NULL,
    device_count   bigint NOT NULL,             -- devices in this placement, deleted included
    live_count     bigint NOT NULL,             -- of them, not deleted
    -- No CHECK on the counts: deltas arrive through INSERT … ON CONFLICT DO UPDATE, whose
    -- proposed row (a negative delta) would fail it even though the row it updates passes.
    PRIMARY KEY (reseller_id, upload_id, placed_knox_id)
);

-- The detail's uploads, newest first; also what LAST UPLOADED is recomputed from when a
-- placement empties.
CREATE INDEX upload_placements_by_row
    ON reporting.upload_placements (reseller_id, placed_knox_id, uploaded_at DESC, upload_id);

-- A row may now exist before the reseller's `customer_added` is projected (the upload's
-- counters arrive first; customer-service's and device-service's events are not ordered)
-- and, in issue #4, only through virtual uploads. `virtual_devices` counts the devices of
-- the virtual uploads placed under the row; a row is listed when the reseller added the
-- account or it holds virtual uploads (DOMAIN.md), and every read filters on `listed`.
ALTER TABLE reporting.customer_rows
    ADD COLUMN virtual_devices bigint NOT NULL DEFAULT 0,
    ADD COLUMN listed boolean NOT NULL GENERATED ALWAYS AS (added OR virtual_devices > 0) STORED;

-- The page orders index listed rows only.
DROP INDEX reporting.customer_rows_by_name;
DROP INDEX reporting.customer_rows_by_last_uploaded;
DROP INDEX reporting.customer_rows_by_devices;
CREATE INDEX customer_rows_by_name
    ON reporting.customer_rows (reseller_id, lower(company_name), knox_id) WHERE listed;
CREATE INDEX customer_rows_by_last_uploaded
    ON reporting.customer_rows (reseller_id, last_uploaded_key DESC, knox_id) WHERE listed;
CREATE INDEX customer_rows_by_devices
    ON reporting.customer_rows (reseller_id, devices DESC, knox_id) WHERE listed;
