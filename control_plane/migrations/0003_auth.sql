-- Sessions that can be ended all at once, and a family for every refresh token.

-- Bumped when a user's sessions must end (suspension, password reset, deletion): an access
-- token carries the generation it was issued under and is refused once it is stale.
ALTER TABLE users ADD COLUMN token_generation INT NOT NULL DEFAULT 0;

-- Tokens issued before families existed become families of one.
UPDATE refresh_tokens SET family_id = encode(token_hash, 'hex') WHERE family_id IS NULL;
ALTER TABLE refresh_tokens ALTER COLUMN family_id SET NOT NULL;
