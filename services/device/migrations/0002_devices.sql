-- Uploads, device registrations, deletions and their per-portal receipts.

CREATE TABLE device.uploads (
    upload_id        uuid PRIMARY KEY,
    reseller_id      text NOT NULL,
    target_knox_id   text NOT NULL,
    target_kind      smallint NOT NULL,
    order_number     text NOT NULL,
    client_upload_id text,
    uploaded_at      timestamptz NOT NULL,
    accepted_count   bigint NOT NULL,
    rejected_count   bigint NOT NULL
);
-- A retried upload with the same client upload ID finds the first one.
CREATE UNIQUE INDEX uploads_client_upload_id ON device.uploads (reseller_id, client_upload_id)
    WHERE client_upload_id IS NOT NULL;

-- Rejected devices of an upload, so GetUpload and retries return the same result.
CREATE TABLE device.upload_rejections (
    upload_id uuid NOT NULL,
    idx       bigint NOT NULL,
    device_id text NOT NULL,
    reason    smallint NOT NULL,
    message   text NOT NULL,
    PRIMARY KEY (upload_id, idx)
);

-- One row per registration. A device is registered to at most one account at a time
-- (the partial unique index); a deleted registration keeps its row, so the device can be
-- uploaded again.
CREATE TABLE device.registrations (
    device_id      text NOT NULL,
    id_kind        smallint NOT NULL,
    model          text NOT NULL,
    reseller_id    text NOT NULL,
    upload_id      uuid NOT NULL,
    target_knox_id text NOT NULL,
    deleted_at     timestamptz,
    deletion_id    uuid
);
CREATE UNIQUE INDEX registrations_live_device ON device.registrations (device_id)
    WHERE deleted_at IS NULL;

CREATE TABLE device.deletions (
    deletion_id          uuid PRIMARY KEY,
    reseller_id          text NOT NULL,
    requested_at         timestamptz NOT NULL,
    part_count           integer NOT NULL,
    deleted_device_ids   text[] NOT NULL,
    not_found_device_ids text[] NOT NULL
);

-- portal: 1 reseller, 2 MSP, 3 customer (reseller.v1.Portal); state: reseller.v1.PortalState.
CREATE TABLE device.deletion_receipts (
    deletion_id uuid NOT NULL,
    portal      smallint NOT NULL,
    part        integer NOT NULL,
    state       smallint NOT NULL,
    PRIMARY KEY (deletion_id, portal, part)
);
