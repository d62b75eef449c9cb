-- Who acted (issue #12, DOMAIN.md "Finding devices, history and the activity log"): the
-- person named by the reseller's token (`name` claim), else the reseller ID. Recorded
-- on the command, answered by GetUpload/ListUploads and GetDeletion/ListDeletions, and
-- carried by the command's events (`devices_uploaded`, `upload_recorded`,
-- `devices_deleted`, `deletion_recorded`).
--
-- Additive and nullable: rows written before this migration, or by a replica that
-- predates it, have none; their actor is the reseller itself (no token named a person
-- then), and reads answer `coalesce(actor, reseller_id)`.
ALTER TABLE device.uploads ADD COLUMN actor text;
ALTER TABLE device.deletions ADD COLUMN actor text;
