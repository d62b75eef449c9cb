-- The W3C trace context (`traceparent`) of the span that wrote the event, so that the
-- relay sends it on as the event's NATS header `traceparent` and the consumer that
-- applies the event continues the trace (see reseller-kit `outbox` and
-- `trace_context`). NULL when the writing process exports no traces.
--
-- Additive and nullable: a relay that predates it reads the rows as before and sends the
-- events without the header.
ALTER TABLE customer.outbox ADD COLUMN traceparent text;
