-- A deletion receipt is written into the outbox as its fields, not as protobuf bytes:
-- the portals' one-statement deletion applies collect the removed devices in SQL, and the
-- outbox relay encodes the event with prost when it publishes it (see reseller-kit
-- `outbox` and `events::PortalReceipt`). The event ID and time are the row's, so a
-- receipt published again after a crash is the same event, byte for byte.
--
-- A row holds its event encoded (payload) or a receipt's fields (receipt), never both.
ALTER TABLE reporting.outbox
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN receipt jsonb,
    ADD CONSTRAINT outbox_payload_or_receipt CHECK (num_nonnulls(payload, receipt) = 1);
