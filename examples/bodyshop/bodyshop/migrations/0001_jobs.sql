CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    registration text NOT NULL,
    customer     text NOT NULL,
    stage        text NOT NULL DEFAULT 'received'
                 CHECK (stage IN ('received', 'estimate', 'repair', 'paint', 'ready', 'collected')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_stage_idx ON jobs (stage);
