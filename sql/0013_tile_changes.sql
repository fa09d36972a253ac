-- Tile invalidation (issue 20, item 2): each change event carries what the tile caches of
-- every process need to drop only the tiles it touches (ioc/events/log.py decides it under
-- the event order lock; tiles/changes.py keeps it in memory).
--   boxes        CRS84 boxes of the changed features before and after (4 numbers each);
--                NULL for a whole-layer change (publish, restore, delete)
--   tile_base    the layer version its tiles are keyed by after this event
--   tile_floor   the oldest event id whose boxes are still kept (a tile checked before it is
--                rendered again)
--   tile_tracked how many events of the layer are kept after the floor
ALTER TABLE ioc.events
    ADD COLUMN IF NOT EXISTS boxes double precision[]
        CHECK (boxes IS NULL OR cardinality(boxes) % 4 = 0),
    ADD COLUMN IF NOT EXISTS tile_base integer,
    ADD COLUMN IF NOT EXISTS tile_floor bigint,
    ADD COLUMN IF NOT EXISTS tile_tracked integer NOT NULL DEFAULT 0;
