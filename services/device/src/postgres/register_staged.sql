-- The exact path of an upload (uploads.rs): registers every device of `upload_staging`
-- (a row per identifier: `pos` 0 the device's own, 1 to 4 its secondary ones) that is
-- neither a repeat within the upload nor registered already, all of its identifiers or
-- none, and records why each other device was rejected.
--
-- $1 reseller_id, $2 upload_id, $3 target_knox_id,
-- $4 the DUPLICATE_IN_UPLOAD reason number, $5 the ALREADY_REGISTERED reason number,
-- $6 and $7 their messages (`RejectionReason::message_stem`; the first is followed by
-- the index of the device's first occurrence).
--
-- Returns the IDs of devices that a concurrent upload beat to some but not all of their
-- identifiers: their rows that did go in must be deleted by the caller (they are
-- rejected here as already registered).
WITH staged AS MATERIALIZED (
    -- first_idx: the first device of the upload that carries this identifier.
    SELECT idx, pos, device_id, id_kind, model, secondary_of,
           min(idx) OVER (PARTITION BY device_id) AS first_idx
    FROM upload_staging),
devices AS MATERIALIZED (
    -- A device is a repeat when any of its identifiers came earlier in the upload, and
    -- registered when any of them is live already.
    SELECT s.idx,
           min(s.first_idx) AS first_idx,
           count(*) AS identifiers,
           bool_or(EXISTS (SELECT 1 FROM device.registrations r
                           WHERE r.device_id = s.device_id AND r.deleted_at IS NULL)) AS registered
    FROM staged s
    GROUP BY s.idx),
inserted AS (
    -- The unique index on live identifiers still decides against concurrent uploads.
    INSERT INTO device.registrations
        (device_id, id_kind, model, secondary_of, reseller_id, upload_id, target_knox_id)
    SELECT s.device_id, s.id_kind, s.model, s.secondary_of, $1, $2, $3
    FROM staged s JOIN devices d USING (idx)
    WHERE d.first_idx = d.idx AND NOT d.registered
    ORDER BY s.device_id
    ON CONFLICT (device_id) WHERE deleted_at IS NULL DO NOTHING
    RETURNING device_id),
inserted_per_device AS (
    -- A candidate's identifiers are its own first occurrences (idx = first_idx).
    SELECT s.idx, count(*) AS inserted
    FROM inserted i JOIN staged s ON s.device_id = i.device_id AND s.idx = s.first_idx
    GROUP BY s.idx),
outcome AS MATERIALIZED (
    SELECT d.idx, d.first_idx, own.device_id,
           d.first_idx = d.idx AND NOT d.registered
               AND coalesce(p.inserted, 0) = d.identifiers AS accepted,
           coalesce(p.inserted, 0) > 0 AND coalesce(p.inserted, 0) < d.identifiers AS partial
    FROM devices d
    JOIN staged own ON own.idx = d.idx AND own.pos = 0
    LEFT JOIN inserted_per_device p ON p.idx = d.idx),
secondaries AS (
    SELECT idx, array_agg(device_id ORDER BY pos) AS ids
    FROM staged WHERE pos > 0 GROUP BY idx),
accepted AS (
    INSERT INTO upload_accepted (device_id, id_kind, model, secondary_ids)
    SELECT own.device_id, own.id_kind, own.model, coalesce(sec.ids, '{}')
    FROM outcome o
    JOIN staged own ON own.idx = o.idx AND own.pos = 0
    LEFT JOIN secondaries sec ON sec.idx = o.idx
    WHERE o.accepted),
rejected AS (
    INSERT INTO device.upload_rejections (upload_id, idx, device_id, reason, message)
    SELECT $2, o.idx, o.device_id,
           CASE WHEN o.first_idx < o.idx THEN $4 ELSE $5 END,
           CASE WHEN o.first_idx < o.idx THEN $6::text || o.first_idx ELSE $7::text END
    FROM outcome o
    WHERE NOT o.accepted)
SELECT device_id FROM outcome WHERE partial
