-- One order of one unit of the hot product, the row-lock way (pgbench script).
\set uid random(1, :users)
BEGIN;
SELECT price, stock FROM rl_products WHERE id = 1 FOR UPDATE;
SELECT balance FROM rl_balances WHERE user_id = :uid FOR UPDATE;
UPDATE rl_products SET stock = stock - 1 WHERE id = 1;
UPDATE rl_balances SET balance = balance - 10 WHERE user_id = :uid;
WITH o AS (INSERT INTO rl_orders (user_id, status, total_amount, paid_amount)
           VALUES (:uid, 'PAID', 10, 10) RETURNING id),
     l AS (INSERT INTO rl_order_lines SELECT id, 1, 10, 1 FROM o),
     p AS (INSERT INTO rl_payments SELECT id, 10, 'COMPLETED' FROM o)
INSERT INTO rl_history (user_id, type, amount, balance_after, order_id)
  SELECT :uid, 'USE', 10, (SELECT balance FROM rl_balances WHERE user_id = :uid), id FROM o;
COMMIT;
