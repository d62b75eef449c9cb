-- Who acted (issue #12, DOMAIN.md "Finding devices, history and the activity log"): the
-- person named by the reseller's token (`name` claim), else the reseller ID. Recorded
-- on the command, and carried by its event (`customer_added.actor`,
-- `customer_reference_updated.actor`).
--
-- Additive and nullable: rows written before this migration, or by a replica that
-- predates it, have none; their actor is the reseller itself (no token named a person
-- then), which is what a reader takes NULL to mean.
ALTER TABLE customer.reseller_customers
    ADD COLUMN added_by text,
    ADD COLUMN reference_updated_by text;
