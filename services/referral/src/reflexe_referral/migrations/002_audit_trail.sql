-- One audit log, not two: the desk and HAD commands' audit_log is superseded by the platform's
-- append-only audit_trail (reflexe_common/sql/001_audit_trail_and_retention.sql), which also
-- records reads and refusals with the caller's token subject. Rows written before keep their
-- actor; their subject was never recorded.
INSERT INTO audit_trail (at, subject, actor, action, department, referral_ids, status, code, detail)
SELECT a.at, 'unrecorded', a.actor, a.action, r.department,
       CASE WHEN a.referral_id IS NULL THEN '{}'::uuid[] ELSE ARRAY[a.referral_id] END,
       CASE WHEN a.outcome = 'done' THEN 200 ELSE 409 END,
       CASE WHEN a.outcome = 'done' THEN 'OK' ELSE coalesce(a.detail ->> 'code', 'REFUSED') END,
       a.detail
FROM audit_log a LEFT JOIN referrals r ON r.referral_id = a.referral_id
ORDER BY a.id;
DROP TABLE audit_log;
