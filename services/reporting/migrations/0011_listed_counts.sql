-- Issue #12: the Customers page's `total_size` without a search is the number of the
-- reseller's listed rows. Counting them on every page scanned the whole list (60 ms at
-- 100,000 rows, in every page's transaction); this table keeps the count instead, exact
-- and in the same transactions as the rows, so a page reads it from the page's own
-- snapshot (`postgres::read`).
--
-- Triggers keep it, not the projection's statements: every write of
-- `reporting.customer_rows` (there are several, and rows become listed or unlisted
-- through generated columns: `added`, or virtual devices arriving or leaving) is then
-- counted without each having to know. They are statement-level with transition tables,
-- so a statement writing many rows (a batch of events, a seeding INSERT … SELECT)
-- updates each reseller's count once, and a statement that flips no row's `listed` (most
-- counter updates) writes nothing. The count's row is locked from the flip to the
-- commit: projections adding customers of one reseller serialize on it, as they would on
-- any per-reseller total.

CREATE TABLE reporting.listed_counts (
    reseller_id text PRIMARY KEY,
    -- The reseller's rows of `reporting.customer_rows` with `listed` true. (No CHECK
    -- (listed >= 0): PostgreSQL checks an upsert's proposed row before it finds the
    -- conflict, and a row's unlisting proposes its negative delta.)
    listed      bigint NOT NULL
);

CREATE FUNCTION reporting.count_listed_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM reporting.listed_counts;
        RETURN NULL;
    END IF;
    -- Each statement only references the transition tables its trigger declares
    -- (PL/pgSQL plans a statement when it first runs it).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO reporting.listed_counts AS c (reseller_id, listed)
        SELECT reseller_id, count(*) FROM new_rows WHERE listed
        GROUP BY reseller_id ORDER BY reseller_id
        ON CONFLICT (reseller_id) DO UPDATE SET listed = c.listed + EXCLUDED.listed;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO reporting.listed_counts AS c (reseller_id, listed)
        SELECT reseller_id, sum(delta) FROM (
            SELECT reseller_id, 1 AS delta FROM new_rows WHERE listed
            UNION ALL
            SELECT reseller_id, -1 FROM old_rows WHERE listed
        ) AS d
        GROUP BY reseller_id HAVING sum(delta) <> 0 ORDER BY reseller_id
        ON CONFLICT (reseller_id) DO UPDATE SET listed = c.listed + EXCLUDED.listed;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE reporting.listed_counts c SET listed = c.listed - d.n
        FROM (SELECT reseller_id, count(*) AS n FROM old_rows WHERE listed
              GROUP BY reseller_id) AS d
        WHERE c.reseller_id = d.reseller_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER customer_rows_count_inserted
    AFTER INSERT ON reporting.customer_rows
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reporting.count_listed_rows();
CREATE TRIGGER customer_rows_count_updated
    AFTER UPDATE ON reporting.customer_rows
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reporting.count_listed_rows();
CREATE TRIGGER customer_rows_count_deleted
    AFTER DELETE ON reporting.customer_rows
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reporting.count_listed_rows();
CREATE TRIGGER customer_rows_count_truncated
    AFTER TRUNCATE ON reporting.customer_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reporting.count_listed_rows();

-- The rows already there (the triggers block writes to the table from their creation
-- until this migration commits, so none is missed or counted twice).
INSERT INTO reporting.listed_counts (reseller_id, listed)
SELECT reseller_id, count(*) FROM reporting.customer_rows WHERE listed GROUP BY reseller_id;
