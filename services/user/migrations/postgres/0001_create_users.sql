-- The user service's table (PostgreSQL).
CREATE TABLE users (
  id BIGSERIAL PRIMARY KEY,
  user_name VARCHAR(32) NOT NULL,
  first_name VARCHAR(64) NOT NULL,
  email VARCHAR(254) NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL,
  CONSTRAINT users_user_name UNIQUE (user_name)
);
