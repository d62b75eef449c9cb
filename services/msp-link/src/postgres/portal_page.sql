-- A page of the MSP portal: the devices the holders `$1` hold (the MSP's pool and its
-- linked customers), after the keyset (`$2` device ID, `$3` upload ID), at most `$4`.
-- One ordered index range per holder (`devices_by_holder`), merged: `holder = ANY(..)
-- ORDER BY` would walk every device of every holder. The table stores "" for a device
-- no MSP moved; the page answers no MSP (NULL) for it.
SELECT d.device_id AS "device_id!", d.id_kind AS "id_kind!", d.model AS "model!",
       d.reseller_id AS "reseller_id!", d.upload_id AS "upload_id!",
       d.holder_knox_id AS "holder_knox_id!", nullif(d.moved_by_msp, '') AS "moved_by_msp?",
       d.uploaded_at AS "uploaded_at!"
FROM UNNEST($1::text[]) AS h (holder),
     LATERAL (
         SELECT device_id, id_kind, model, reseller_id, upload_id, holder_knox_id,
                moved_by_msp, uploaded_at
         FROM msp.devices
         WHERE holder_knox_id = h.holder
           AND ($2::text IS NULL OR (device_id, upload_id) > ($2, $3::uuid))
         ORDER BY device_id, upload_id
         LIMIT $4
     ) AS d
ORDER BY d.device_id, d.upload_id
LIMIT $4
