-- 1.1.0: an optional cost estimate. Nullable with no rewrite, so 1.0.0 keeps working on it.
ALTER TABLE jobs ADD COLUMN estimate numeric(12, 2) CHECK (estimate >= 0);
