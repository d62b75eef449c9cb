-- A device's secondary identifiers (a dual-SIM's IMEI 2, its serial), canonical, from
-- `UploadedDevice.secondary_ids` of `devices_uploaded`: a move finds a device by any of
-- its identifiers (DOMAIN.md "Secondary identifiers"). They live and die with their
-- registration.
CREATE TABLE msp.secondary_ids (
    secondary_id text NOT NULL,
    device_id    text NOT NULL,
    upload_id    uuid NOT NULL,
    PRIMARY KEY (secondary_id, device_id, upload_id),
    FOREIGN KEY (device_id, upload_id) REFERENCES msp.devices (device_id, upload_id)
        ON DELETE CASCADE
);
-- Serves the cascade when a deletion removes a registration.
CREATE INDEX secondary_ids_by_registration ON msp.secondary_ids (device_id, upload_id);
