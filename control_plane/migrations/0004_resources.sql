-- Resources: project names are unique, agents are found by project, usage by provider label.

CREATE UNIQUE INDEX projects_name ON projects (lower(name));
CREATE INDEX agents_project ON agents (project_id);
-- A provider's usage is the events whose free-text label is its type or its name (any case).
CREATE INDEX usage_events_provider ON usage_events (lower(provider));
