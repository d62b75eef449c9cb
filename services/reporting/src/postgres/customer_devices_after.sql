-- A page of the live devices placed under a customer's row after a device, in the
-- detail's order (newest upload first, then upload ID, then device ID).
--
-- $1 reseller_id, $2 the row's Knox ID, $3 $4 $5 the key of the device the page starts
-- after (uploaded_at, upload_id, device_id), $6 the page size.
--
-- The order mixes directions, so "after the key" is two index ranges of
-- `registrations_placed_live`: the rest of the key's upload time, then every older one.
-- Each branch reads at most a page; the outer sort orders at most two pages. (The
-- `!` marks tell sqlx that the union's columns are as NOT NULL as the table's.)
SELECT device_id AS "device_id!", id_kind AS "id_kind!", model AS "model!",
       upload_id AS "upload_id!", uploaded_at AS "uploaded_at!",
       order_number AS "order_number!", virtual AS "virtual!"
FROM (
    (SELECT device_id, id_kind, model, upload_id, uploaded_at, order_number, virtual
     FROM reporting.registrations
     WHERE reseller_id = $1 AND placed_knox_id = $2 AND NOT deleted
       AND uploaded_at = $3 AND (upload_id, device_id) > ($4, $5)
     ORDER BY uploaded_at DESC, upload_id, device_id LIMIT $6)
    UNION ALL
    (SELECT device_id, id_kind, model, upload_id, uploaded_at, order_number, virtual
     FROM reporting.registrations
     WHERE reseller_id = $1 AND placed_knox_id = $2 AND NOT deleted
       AND uploaded_at < $3
     ORDER BY uploaded_at DESC, upload_id, device_id LIMIT $6)) AS page
ORDER BY uploaded_at DESC, upload_id, device_id LIMIT $6
