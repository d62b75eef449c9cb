-- The registrations to re-place (`msp::replace_registrations`), locked and counted by
-- group: what decides their placement (upload, holder, the holder's link, whether the
-- holder was delinked since the move) and where they are placed now. Registrations whose
-- upload is not known yet are placed nowhere and stay so.
--
-- Which registrations: $1 a customer, for those uploaded to an MSP that it holds (the
-- ones its link decides; the predicate of the index `registrations_held_from_msp`), or
-- $2 and $3 device IDs and upload IDs, pairwise. The caller gives one or the other ($1
-- NULL, or both arrays empty); each branch of `concerned` is an index range.
WITH concerned AS (
    SELECT device_id, upload_id FROM reporting.registrations
    WHERE holder_knox_id = $1 AND uploaded_to_msp AND holder_knox_id <> uploaded_to
    UNION ALL
    SELECT * FROM UNNEST($2::text[], $3::uuid[])),
locked AS (
    SELECT r.reseller_id, r.upload_id, r.uploaded_at, r.order_number, r.uploaded_to,
           r.uploaded_to_msp, r.holder_knox_id, r.move_seq, r.placed_knox_id, r.virtual,
           r.via_msp_id, r.deleted
    FROM reporting.registrations r JOIN concerned c USING (device_id, upload_id)
    FOR UPDATE OF r)
SELECT k.reseller_id, k.upload_id, k.uploaded_at, k.order_number, k.uploaded_to,
       k.uploaded_to_msp, k.holder_knox_id,
       CASE WHEN l.linked THEN l.msp_id END AS holder_msp,
       COALESCE(l.delinked_seq, 0) AS "delinked_seq!",
       k.move_seq < COALESCE(l.delinked_seq, 0) AS "delinked_since_move!",
       k.placed_knox_id, k.virtual AS virtual_upload, k.via_msp_id,
       count(*) AS "devices!", count(*) FILTER (WHERE NOT k.deleted) AS "live!"
FROM locked k LEFT JOIN reporting.msp_links l ON l.customer_knox_id = k.holder_knox_id
WHERE k.uploaded_to IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
