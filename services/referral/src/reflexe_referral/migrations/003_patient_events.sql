-- The patient's pseudonym on the state row: the HL7 gateway finds a patient's referral by it.
-- Rows created before this migration have none and are not found by pseudonym (an HAD's message
-- naming the referral id still finds them).
ALTER TABLE referrals ADD COLUMN patient_pseudonym text;
CREATE INDEX referrals_by_pseudonym ON referrals (patient_pseudonym) WHERE patient_pseudonym IS NOT NULL;

-- Patient events reported by the gateway, by its message key: a retried report returns the
-- first outcome and changes nothing (the effect and this row are written in one transaction).
CREATE TABLE patient_event_receipts (
    message_key text        PRIMARY KEY,
    outcome     jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
