-- Numbers msp-link's events (`seq` in events.proto).
CREATE SEQUENCE msp.event_seq;

-- Links between MSPs and the customers they manage. One live link per customer; a
-- delink ends it (the history keeps it).
CREATE TABLE msp.links (
    customer_knox_id text PRIMARY KEY,
    msp_id           text NOT NULL,
    mode             smallint NOT NULL,            -- reseller.v1.ManagementMode
    since            timestamptz NOT NULL
);
CREATE INDEX links_by_msp ON msp.links (msp_id, customer_knox_id);

CREATE TABLE msp.link_history (
    customer_knox_id text NOT NULL,
    msp_id           text NOT NULL,
    linked_at        timestamptz NOT NULL,
    delinked_at      timestamptz NOT NULL,
    requested_by     text NOT NULL
);

-- Every live registration (device, upload): where it was uploaded and who holds it now.
-- The MSP portal is a query over this and `links`.
CREATE TABLE msp.devices (
    device_id        text NOT NULL,
    upload_id        uuid NOT NULL,
    reseller_id      text NOT NULL,
    id_kind          smallint NOT NULL,
    model            text NOT NULL,
    order_number     text NOT NULL,
    uploaded_at      timestamptz NOT NULL,
    uploaded_to      text NOT NULL,                -- the account the reseller uploaded to
    uploaded_to_msp  boolean NOT NULL,             -- that account is an MSP
    holder_knox_id   text NOT NULL,                -- the account holding it now
    moved_by_msp     text NOT NULL DEFAULT '',     -- the MSP that moved it ('' if never moved)
    move_seq         bigint NOT NULL DEFAULT 0,    -- `seq` of the last move
    PRIMARY KEY (device_id, upload_id)
);
-- Serves the MSP portal's pages: one ordered range per holder.
CREATE INDEX devices_by_holder ON msp.devices (holder_knox_id, device_id, upload_id);
CREATE INDEX devices_by_uploaded_to ON msp.devices (uploaded_to);

-- Deleted registrations, so late events never bring them back.
CREATE TABLE msp.deleted_registrations (
    device_id text NOT NULL,
    upload_id uuid NOT NULL,
    PRIMARY KEY (device_id, upload_id)
);
