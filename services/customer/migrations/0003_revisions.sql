-- Revisions travel with events so projections keep the newest value whatever order
-- events arrive in.
ALTER TABLE customer.reseller_customers ADD COLUMN reference_revision bigint NOT NULL DEFAULT 1;
ALTER TABLE customer.approvals ADD COLUMN revision bigint NOT NULL DEFAULT 1;
