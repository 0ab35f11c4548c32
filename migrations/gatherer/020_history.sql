-- trades.source is varchar(10) in both databases (kalshictl/schema.py describes one column for both): production
-- stores 'historical' rows from `kalshictl history import` (production/020_history.sql); a gatherer never writes
-- one, so its check constraint stays ('ws', 'rest'). Widening a varchar is a catalogue change only (no rewrite).
ALTER TABLE trades ALTER COLUMN source TYPE varchar(10);
