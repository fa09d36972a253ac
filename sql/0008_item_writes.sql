-- OGC API – Features Part 4: single-feature writes are versions too (without a snapshot).
ALTER TABLE ioc.layer_versions DROP CONSTRAINT IF EXISTS layer_versions_operation_check;
ALTER TABLE ioc.layer_versions ADD CONSTRAINT layer_versions_operation_check CHECK (
    operation IN ('seed', 'replace', 'append', 'restore',
                  'item.create', 'item.replace', 'item.update', 'item.delete')
);
