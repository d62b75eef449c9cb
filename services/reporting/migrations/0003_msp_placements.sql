-- Issue #4: MSP links and moves (placement rules 2 and 3), and the revisions that make
-- the customer events order-independent.

-- The newest MSP-link fact of each customer, from msp-link's events. msp-link numbers
-- its events `seq` in commit order for any one customer, so the fact with the highest
-- `seq` wins whatever order the events arrive in. A move to a customer at `seq` also
-- says the customer was linked to the moving MSP at `seq` (a move needs a live link).
-- `delinked_seq` is the `seq` of the customer's newest delink (0 if none): a registration
-- moved to the customer before it (`move_seq < delinked_seq`) was moved to a customer
-- that has been delinked since, which rule 3 makes a virtual upload for good.
CREATE TABLE reporting.msp_links (
    customer_knox_id text PRIMARY KEY,
    msp_id           text NOT NULL,    -- the MSP of the newest fact
    linked           boolean NOT NULL, -- linked (fully or jointly managed) as of `seq`
    seq              bigint NOT NULL,
    delinked_seq     bigint NOT NULL DEFAULT 0
);

-- A link or delink re-places the registrations its customer holds that were uploaded to
-- an MSP (the only ones whose placement depends on the holder's link).
CREATE INDEX registrations_held_from_msp
    ON reporting.registrations (holder_knox_id)
    WHERE uploaded_to_msp AND holder_knox_id <> uploaded_to;

-- Registrations known only from a move so far (the upload's event has not been
-- projected): an upload part looks for them by its upload ID. Normally empty.
CREATE INDEX registrations_awaiting_upload
    ON reporting.registrations (upload_id)
    WHERE uploaded_to IS NULL;

-- The managing MSP is read from `msp_links` when a row is read, so every reseller's row
-- of a customer, including rows created after the link, shows the current one.
ALTER TABLE reporting.customer_rows DROP COLUMN managing_msp_id;

-- customer-service's revisions: the reference and the status each keep the value of the
-- highest revision seen, so a late, older event never overwrites a newer one, and an
-- event that arrives before the reseller's `customer_added` is kept (in an unlisted row,
-- or in `approvals`) rather than retried.
ALTER TABLE reporting.customer_rows
    ADD COLUMN reference_revision bigint NOT NULL DEFAULT 0,
    ADD COLUMN status_revision bigint NOT NULL DEFAULT 0;
ALTER TABLE reporting.approvals
    ADD COLUMN revision bigint NOT NULL DEFAULT 0;
