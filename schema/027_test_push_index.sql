-- 027_test_push_index: the test pushes waiting for their first attempt, by
-- webhook. A disabled webhook's other deliveries wait until it is enabled
-- again; claim_deliveries() asks whether it has a test push to send, which
-- read through all of them at every claim without this index (a claim took
-- 50 ms at 100,000 waiting, more with more, for as long as the webhook
-- stayed disabled). Only test pushes are in it: nothing for the
-- other deliveries to keep up. schema/functions/queue.sql changed with it.
CREATE INDEX deliveries_test_due ON reghook.deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending' AND is_test AND attempts = 0;
COMMENT ON INDEX reghook.deliveries_test_due IS
    'Test pushes waiting for their first attempt, by webhook: what a disabled webhook may still be sent.';
