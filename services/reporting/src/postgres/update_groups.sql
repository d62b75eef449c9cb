-- Moves the groups of registrations `select_groups.sql` counted (named by what it grouped
-- them on, $4 to $11 pairwise, with their new placements $12 to $14) to their new
-- placements, among the same registrations ($1 a customer, or $2 and $3 device IDs and
-- upload IDs pairwise; see there). Answers how many it moved, and which of them are
-- deleted (their deletions are listed where they are placed now).
WITH concerned AS (
    SELECT device_id, upload_id FROM reporting.registrations
    WHERE holder_knox_id = $1 AND uploaded_to_msp AND holder_knox_id <> uploaded_to
    UNION ALL
    SELECT * FROM UNNEST($2::text[], $3::uuid[])),
updated AS (
UPDATE reporting.registrations r
SET placed_knox_id = g.new_knox_id, virtual = g.new_virtual, via_msp_id = g.new_via
FROM concerned c,
     UNNEST($4::text[], $5::uuid[], $6::text[], $7::bigint[], $8::boolean[], $9::text[],
            $10::boolean[], $11::text[], $12::text[], $13::boolean[], $14::text[])
       AS g (reseller_id, upload_id, holder, delinked_seq, delinked_since_move,
             old_knox_id, old_virtual, old_via, new_knox_id, new_virtual, new_via)
WHERE r.device_id = c.device_id AND r.upload_id = c.upload_id
  AND r.uploaded_to IS NOT NULL
  AND r.reseller_id = g.reseller_id AND r.upload_id = g.upload_id
  AND r.holder_knox_id = g.holder
  AND (r.move_seq < g.delinked_seq) = g.delinked_since_move
  AND r.placed_knox_id IS NOT DISTINCT FROM g.old_knox_id
  AND r.virtual = g.old_virtual AND r.via_msp_id = g.old_via
RETURNING r.device_id, r.upload_id, r.deleted)
SELECT count(*) AS "updated!",
       COALESCE(array_agg(device_id) FILTER (WHERE deleted), '{}') AS "deleted_ids!",
       COALESCE(array_agg(upload_id) FILTER (WHERE deleted), '{}') AS "deleted_uploads!"
FROM updated
