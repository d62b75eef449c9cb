-- An upload part is projected with COPY unless its upload has a tombstone (a deletion
-- projected before the upload): the check reads the tombstones by upload, and under
-- SERIALIZABLE its predicate lock then covers that upload's key range, not the table.
CREATE INDEX deleted_registrations_by_upload ON reporting.deleted_registrations (upload_id);
