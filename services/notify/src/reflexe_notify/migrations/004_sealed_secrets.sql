-- Webhook signing secrets are stored sealed (Fernet under the keys of NOTIFY_SECRET_KEYS), never in
-- plaintext. SQL holds no key, so this migration is completed by the service: right after applying it
-- (and at every start, for any row still in plaintext) it seals the secrets stored before, then
-- validates this constraint (service_layer/secret_keys.py, seal_plaintext_secrets). NOT VALID: the
-- rows written before are checked only at that validation; every row written from now on is checked
-- at once, so a plaintext secret (whsec_...) can no longer be stored by mistake.
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_secrets_sealed CHECK (
    coalesce(secrets[1], '') NOT LIKE 'whsec\_%' AND coalesce(secrets[2], '') NOT LIKE 'whsec\_%'
) NOT VALID;
