-- The customer portal: devices uploaded directly to a customer account (by any
-- reseller), and devices moved to it by an MSP. One row per registration.
CREATE TABLE customer.portal_devices (
    holder_knox_id text NOT NULL,
    device_id      text NOT NULL,
    upload_id      uuid NOT NULL,
    id_kind        smallint NOT NULL,
    model          text NOT NULL,
    reseller_id    text NOT NULL,
    moved_by_msp   boolean NOT NULL DEFAULT false,
    msp_id         text NOT NULL DEFAULT '',
    move_seq       bigint NOT NULL DEFAULT 0,   -- `seq` of the move that put it here
    uploaded_at    timestamptz NOT NULL,
    PRIMARY KEY (device_id, upload_id)
);
CREATE INDEX portal_devices_by_holder ON customer.portal_devices (holder_knox_id, device_id, upload_id);

-- Registrations deleted, remembered so that an upload or move event arriving after the
-- deletion (events from different services are not ordered) never shows the device.
CREATE TABLE customer.deleted_registrations (
    device_id text NOT NULL,
    upload_id uuid NOT NULL,
    PRIMARY KEY (device_id, upload_id)
);
