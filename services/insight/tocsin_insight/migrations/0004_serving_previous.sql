-- The generation that served before the current one: it is kept when older ones are
-- dropped after a switch (an API replica's cached name or a consumer about to follow the
-- switch may still use it for a moment).
ALTER TABLE insight_serving ADD COLUMN previous text;
