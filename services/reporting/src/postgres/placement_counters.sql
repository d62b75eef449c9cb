-- Placement deltas applied to the counters (`write::PLACEMENT_COUNTERS`): two CTEs for
-- the one statement of whoever names the deltas, the projection's `apply_deltas` (from
-- bound arrays) and a deletion's one statement (from the registrations it marked). It
-- reads the relation `deltas` (reseller_id text, upload_id uuid, knox_id text, kind
-- text, uploaded_at timestamptz, order_number text, virtual boolean, via_msp_id text,
-- devices bigint, live bigint): one delta per placement (one upload under one row).
--
-- The detail's uploads (`upload_placements`) and the rows' UPLOADS, DEVICES, virtual
-- devices and LAST UPLOADED (which only grows here: `apply_deltas` handles a placement
-- that empties) are upserts: a placement or row that a concurrent transaction created
-- after this statement's snapshot is still found, where a plain UPDATE would miss it.
-- A delta for a row that does not exist yet creates it unlisted (`added` false, the
-- status the column's default gives such a row, migration 0006), with what `accounts`
-- knows of the account, so counters that arrive before the reseller's `customer_added`
-- are kept; `add_customer` then completes the row.
placements AS (
    INSERT INTO reporting.upload_placements AS p
        (reseller_id, upload_id, placed_knox_id, uploaded_at, order_number, virtual,
         via_msp_id, device_count, live_count)
    SELECT reseller_id, upload_id, knox_id, uploaded_at, order_number, virtual, via_msp_id,
           devices, live
    FROM deltas
    ON CONFLICT (reseller_id, upload_id, placed_knox_id) DO UPDATE
    SET device_count = p.device_count + EXCLUDED.device_count,
        live_count = p.live_count + EXCLUDED.live_count),
counters AS (
    INSERT INTO reporting.customer_rows AS c
        (reseller_id, knox_id, kind, company_name, country, uploaded_devices, devices,
         virtual_devices, last_uploaded_at)
    SELECT r.reseller_id, r.knox_id, COALESCE(a.kind, r.kind), COALESCE(a.company_name, ''),
           COALESCE(a.country, ''), r.devices, r.live, r.virtual_devices, r.newest
    FROM (SELECT reseller_id, knox_id, min(kind) AS kind, sum(devices) AS devices,
                 sum(live) AS live,
                 COALESCE(sum(devices) FILTER (WHERE virtual), 0) AS virtual_devices,
                 max(uploaded_at) FILTER (WHERE devices > 0) AS newest
          FROM deltas GROUP BY reseller_id, knox_id) r
    LEFT JOIN reporting.accounts a ON a.knox_id = r.knox_id
    ON CONFLICT (reseller_id, knox_id) DO UPDATE
    SET uploaded_devices = c.uploaded_devices + EXCLUDED.uploaded_devices,
        devices = c.devices + EXCLUDED.devices,
        virtual_devices = c.virtual_devices + EXCLUDED.virtual_devices,
        last_uploaded_at = GREATEST(c.last_uploaded_at, EXCLUDED.last_uploaded_at))
