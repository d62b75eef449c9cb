-- A row created before the reseller's `customer_added` (by an upload's counters, a
-- virtual upload or a reference update) is unlisted (`added` false) and shows ACTIVE: the
-- rule "a row listed only through virtual uploads shows ACTIVE" (reporting-service's
-- lib.rs, from DOMAIN.md). It is said once, here, as the column's default: the writes
-- that create such rows name no status, and `customer_added` sets the real one.
ALTER TABLE reporting.customer_rows ALTER COLUMN status SET DEFAULT 'ACTIVE';
COMMENT ON COLUMN reporting.customer_rows.status IS
    'the reseller''s customer status; ACTIVE (the default) on a row the reseller has not added';
