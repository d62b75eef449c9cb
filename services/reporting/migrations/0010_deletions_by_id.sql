-- Issue #12: a deletion is listed in the activity log under every row of the reseller's
-- list its deleted devices are placed under, whatever order the events came in; when an
-- upload, a move or a link projected after the deletion places one of its devices, the
-- projection lists the deletion again from its registrations, found by this index.
CREATE INDEX registration_deletions_by_deletion
    ON reporting.registration_deletions (deletion_id);
