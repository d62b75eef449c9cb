-- The registrations a move's canonical identifiers name (the one lookup rule, DOMAIN.md
-- "Secondary identifiers"): by device ID or by any secondary identifier. A registration
-- named twice (by IMEI 1 and IMEI 2) appears once per key. A plain SQL function, so the
-- planner inlines it into the statements that call it.
CREATE FUNCTION msp.named_registrations(keys text[])
RETURNS TABLE (key text, device_id text, upload_id uuid)
LANGUAGE sql STABLE
AS $$
    WITH named AS (SELECT DISTINCT unnest(keys) AS key)
    SELECT n.key, d.device_id, d.upload_id FROM named n JOIN msp.devices d ON d.device_id = n.key
    UNION
    SELECT n.key, s.device_id, s.upload_id
    FROM named n JOIN msp.secondary_ids s ON s.secondary_id = n.key
$$;
