-- The classic design the seeds describe, for comparison: one Postgres transaction per
-- order that locks the product row and the balance row with SELECT ... FOR UPDATE.
DROP TABLE IF EXISTS rl_history, rl_payments, rl_order_lines, rl_orders, rl_balances, rl_products;
CREATE TABLE rl_products (id bigint PRIMARY KEY, name text NOT NULL, price bigint NOT NULL,
  stock bigint NOT NULL CHECK (stock >= 0));
CREATE TABLE rl_balances (user_id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
CREATE TABLE rl_orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL, status text NOT NULL,
  total_amount bigint NOT NULL, paid_amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE rl_order_lines (order_id bigint NOT NULL REFERENCES rl_orders, product_id bigint NOT NULL,
  unit_price bigint NOT NULL, quantity int NOT NULL);
CREATE TABLE rl_payments (order_id bigint PRIMARY KEY REFERENCES rl_orders, amount bigint NOT NULL,
  status text NOT NULL);
CREATE TABLE rl_history (id bigserial PRIMARY KEY, user_id bigint NOT NULL, type text NOT NULL,
  amount bigint NOT NULL, balance_after bigint NOT NULL, order_id bigint);
INSERT INTO rl_products VALUES (1, 'hot item', 10, 1000000000);
INSERT INTO rl_balances SELECT g, 10000000 FROM generate_series(1, :users) g;
