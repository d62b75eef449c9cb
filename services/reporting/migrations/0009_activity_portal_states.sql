-- Issue #12: a deletion's entry in the activity log shows its state in each portal
-- (DOMAIN.md "Finding devices, history and the activity log": "deletions (count, portal
-- states)"). They come from device-service's `deletion_completed` when the portals'
-- receipts complete the deletion, or at once from `deletion_recorded` for a deletion
-- of no device. NULL: not known yet, i.e. pending. The numbers are
-- `reseller.v1.PortalState`'s: 2 REMOVED, 3 NOT_APPLICABLE (1 PENDING is never stored).
ALTER TABLE reporting.activities
    ADD COLUMN reseller_portal smallint CHECK (reseller_portal IN (2, 3)),
    ADD COLUMN msp_portal smallint CHECK (msp_portal IN (2, 3)),
    ADD COLUMN customer_portal smallint CHECK (customer_portal IN (2, 3));
