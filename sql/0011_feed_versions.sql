-- Feed ingest: a batch upserted by id is a version too (without a snapshot, like item writes).
ALTER TABLE ioc.layer_versions DROP CONSTRAINT IF EXISTS layer_versions_operation_check;
ALTER TABLE ioc.layer_versions ADD CONSTRAINT layer_versions_operation_check CHECK (
    operation IN ('seed', 'replace', 'append', 'restore',
                  'item.create', 'item.replace', 'item.update', 'item.delete', 'feed.upsert')
);
