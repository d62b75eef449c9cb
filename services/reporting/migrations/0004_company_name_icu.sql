-- Issue #9: the Customers page (its default order, `company_name`) and the customers CSV
-- sort company names in PostgreSQL's ICU root collation, `und-x-icu` (the Unicode
-- Collation Algorithm with CLDR's root order), instead of by `lower(company_name)` in the
-- database's own collation. People's order, whatever locale the server was set up with:
-- `Ärzte` sorts with `A` and `émile` with `E` (accents count only between otherwise equal
-- names), and case is only a last tie-break, so `acme` sits next to `Acme` (before
-- `acme b`). The collation is deterministic: names equal to it are ordered by their bytes,
-- so the order stays total, and the Knox ID breaks exact ties as before.
--
-- Every query of that order (the ORDER BY, and the page token's keyset comparison) says
-- `company_name COLLATE "und-x-icu"`, the expression of the index below, which serves the
-- keyset pages (see `postgres::read`).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        RAISE EXCEPTION 'reporting-service needs PostgreSQL built with ICU: collation "und-x-icu" is missing';
    END IF;
END
$$;

DROP INDEX reporting.customer_rows_by_name;
CREATE INDEX customer_rows_by_name_icu
    ON reporting.customer_rows (reseller_id, company_name COLLATE "und-x-icu", knox_id)
    WHERE listed;
