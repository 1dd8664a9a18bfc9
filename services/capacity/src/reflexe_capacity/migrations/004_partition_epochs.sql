-- Fencing of the matcher's single writer per partition: the process that is assigned a partition
-- of the referral log bumps its epoch; every batch holds the epoch row FOR SHARE and commits only
-- if it is still the one it took, so a process that lost the partition cannot commit decisions made
-- on its (now stale) in-memory ledgers.
CREATE TABLE partition_epochs (
    topic     text   NOT NULL,
    partition int    NOT NULL,
    epoch     bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
