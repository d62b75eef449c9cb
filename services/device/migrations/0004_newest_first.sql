-- ListUploads and ListDeletions (CONTRACT.md "Additions"): a reseller's uploads and
-- deletions, newest first, paged by keyset on (time, ID).
CREATE INDEX uploads_by_reseller_newest
    ON device.uploads (reseller_id, uploaded_at DESC, upload_id DESC);
CREATE INDEX deletions_by_reseller_newest
    ON device.deletions (reseller_id, requested_at DESC, deletion_id DESC);
