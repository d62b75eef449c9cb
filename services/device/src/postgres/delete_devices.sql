-- Deletes, for one reseller, every live device that any of the asked identifiers names
-- (its own ID or a secondary identifier), with all of its identifiers.
--
-- $1 deletion_id, $2 reseller_id, $3 the asked identifiers, canonical (text[]).
--
-- Returns one row per deleted device: its ID, upload and target, and which of the asked
-- identifiers named it. A device a concurrent deletion took first is not returned (its
-- UPDATE re-checks `deleted_at` after the lock), so its identifiers are "not found".
WITH asked AS MATERIALIZED (
    SELECT device_id AS asked_id, coalesce(secondary_of, device_id) AS device
    FROM device.registrations
    WHERE deleted_at IS NULL AND reseller_id = $2 AND device_id = ANY($3)),
own AS (
    UPDATE device.registrations SET deleted_at = now(), deletion_id = $1
    WHERE deleted_at IS NULL AND reseller_id = $2 AND secondary_of IS NULL
      AND device_id IN (SELECT device FROM asked)
    RETURNING device_id, upload_id, target_knox_id),
secondary AS (
    -- The device's other identifiers' rows: disjoint from `own`'s rows.
    UPDATE device.registrations SET deleted_at = now(), deletion_id = $1
    WHERE deleted_at IS NULL AND reseller_id = $2
      AND secondary_of IN (SELECT device FROM asked))
SELECT o.device_id, o.upload_id, o.target_knox_id, array_agg(a.asked_id) AS asked
FROM own o JOIN asked a ON a.device = o.device_id
GROUP BY o.device_id, o.upload_id, o.target_knox_id
