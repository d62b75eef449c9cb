-- One handset, one registration (DOMAIN.md "Devices and uploads"): a device may carry up
-- to 4 secondary identifiers (a dual-SIM's IMEI 2, its serial). Every identifier of a
-- device is a row of device.registrations, so the partial unique index on live
-- `device_id`s keeps "already registered" across every identifier of every device,
-- for the COPY fast path too. The device's own row has `secondary_of` NULL; a secondary
-- identifier's row names the device's ID there and repeats its upload, reseller and
-- target.
ALTER TABLE device.registrations ADD COLUMN secondary_of text;
COMMENT ON COLUMN device.registrations.device_id IS
    'an identifier, canonical (reseller_kit::device_id): the device ID when secondary_of is NULL';
COMMENT ON COLUMN device.registrations.secondary_of IS
    'NULL for a device''s own row; else the device ID this secondary identifier belongs to';
-- Deleting a device by any identifier deletes its secondary rows with it.
CREATE INDEX registrations_live_secondary ON device.registrations (secondary_of)
    WHERE secondary_of IS NOT NULL AND deleted_at IS NULL;

-- A deletion keeps at most the first 1,000 not-found IDs (each cut to 64 characters) and
-- how many there were, so its answer stays deliverable.
ALTER TABLE device.deletions ADD COLUMN not_found_count bigint NOT NULL DEFAULT 0;
UPDATE device.deletions SET not_found_count = cardinality(not_found_device_ids);
