-- pgferry demo: a small shop. Created on the source and on both replicas.
CREATE TABLE customers (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text NOT NULL,
  email      text NOT NULL UNIQUE,
  tags       text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers,
  amount      numeric(12, 2) NOT NULL,
  status      text NOT NULL DEFAULT 'new',
  details     jsonb,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
