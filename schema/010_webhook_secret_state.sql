-- 010_webhook_secret_state: whether a webhook has a password and a signing
-- secret, for everyone who may see the webhook.
--
-- `reghook webhook show` read webhook_secrets to say whether a password and
-- a secret are set, and so failed for every member ("permission denied for
-- table webhook_secrets"), viewers and contributors alike, although they may
-- see the webhook. webhook_secret_state() tells them whether each is set,
-- never its value.
CREATE FUNCTION reghook.webhook_secret_state(webhook bigint,
                                             OUT has_password boolean, OUT has_secret boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 1);
    SELECT s.password IS NOT NULL, s.secret IS NOT NULL INTO has_password, has_secret
    FROM reghook.webhook_secrets s WHERE s.webhook_id = webhook;
    has_password := coalesce(has_password, false);
    has_secret := coalesce(has_secret, false);
END
$$;
COMMENT ON FUNCTION reghook.webhook_secret_state(bigint) IS
    'Whether a webhook has a basic auth password and a signing secret (never their values). Viewers.';

REVOKE ALL ON FUNCTION reghook.webhook_secret_state(bigint) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION reghook.webhook_secret_state(bigint) TO %I, %I',
                   reghook.role_name('admin'), reghook.role_name('member'));
END
$$;
