"""Operations dashboards: panels of one layer's aggregates beside a ward map, linked both ways."""
