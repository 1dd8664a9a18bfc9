-- Retention (reflexe_common.retention) deletes the attempts of settled deliveries by age.
CREATE INDEX IF NOT EXISTS delivery_attempts_started ON delivery_attempts (started_at);
