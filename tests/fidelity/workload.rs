//! The fidelity test's random workload: transactions of inserts, updates that leave the
//! TOASTed `body` alone or rewrite it, primary-key changes (to keys ahead of a backfill and
//! behind it), deletes, and changes of a second table with a composite key, seeded.

use crate::faults::harness::Rng;

/// The two tables, created alike in the source and the replica.
pub(crate) const TABLES: &str = "
    CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text, amount numeric(12,2),
                        body text);
    CREATE TABLE lines (order_id int, n int, qty numeric, tags text[], PRIMARY KEY (order_id, n));";

pub(crate) struct Workload {
    rng: Rng,
    items: Vec<i64>,
    next_id: i64,
    lines: Vec<(i64, i64)>,
    next_order: i64,
}

impl Workload {
    pub(crate) fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng::new(seed),
            items: Vec::new(),
            next_id: 1,
            lines: Vec::new(),
            next_order: 1,
        }
    }

    pub(crate) fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A body: large (3,200 characters, TOASTed out of line), small, or NULL.
    fn body(&mut self) -> String {
        match self.rng.range(0, 10) {
            0..=5 => format!(
                "(SELECT string_agg(md5('{}.' || n), '') FROM generate_series(1, 100) n)",
                self.rng.next()
            ),
            6..=8 => format!("'small {}'", self.rng.range(0, 1000)),
            _ => "NULL".into(),
        }
    }

    fn insert_item(&mut self) -> String {
        let id = self.next_id;
        self.next_id += 1;
        self.items.push(id);
        let body = self.body();
        format!(
            "INSERT INTO items VALUES ({id}, {}, 'note {id}', {}.{:02}, {body})",
            self.rng.range(0, 100),
            self.rng.range(0, 10_000),
            self.rng.range(0, 100)
        )
    }

    /// The setup's rows: `items` items and `orders` orders of 1 to 3 lines, one statement.
    pub(crate) fn initial(&mut self, items: usize, orders: usize) -> Vec<String> {
        let mut sql: Vec<String> = (0..items).map(|_| self.insert_item()).collect();
        for _ in 0..orders {
            for _ in 0..self.rng.range(1, 4) {
                sql.push(self.insert_line());
            }
        }
        sql
    }

    fn insert_line(&mut self) -> String {
        let order = if self.lines.is_empty() || self.rng.chance(30) {
            self.next_order += 1;
            self.next_order
        } else {
            let at = self.pick(self.lines.len());
            self.lines[at].0
        };
        let n = self
            .lines
            .iter()
            .filter(|(o, _)| *o == order)
            .map(|(_, n)| n + 1)
            .max()
            .unwrap_or(1);
        self.lines.push((order, n));
        format!(
            "INSERT INTO lines VALUES ({order}, {n}, {}.5, ARRAY['a{n}', NULL, 'b'])",
            self.rng.range(0, 50)
        )
    }

    fn pick(&mut self, len: usize) -> usize {
        self.rng.range(0, len as u64) as usize
    }

    /// One statement of the workload.
    fn statement(&mut self) -> String {
        let roll = self.rng.range(0, 100);
        if self.items.is_empty() || roll < 20 {
            return self.insert_item();
        }
        let at = self.pick(self.items.len());
        let id = self.items[at];
        match roll {
            20..=49 => {
                format!("UPDATE items SET v = v + 1, note = 'updated ' || v WHERE id = {id}")
            }
            50..=59 => {
                let body = self.body();
                format!("UPDATE items SET body = {body}, amount = amount + 1 WHERE id = {id}")
            }
            60..=66 => {
                // A key change: ahead of every key, or behind (negative).
                let to = if self.rng.chance(50) {
                    self.next_id
                } else {
                    -self.next_id
                };
                self.next_id += 1;
                self.items[at] = to;
                format!("UPDATE items SET id = {to}, v = v + 1 WHERE id = {id}")
            }
            67..=76 => {
                self.items.swap_remove(at);
                format!("DELETE FROM items WHERE id = {id}")
            }
            _ => self.line_statement(),
        }
    }

    fn line_statement(&mut self) -> String {
        if self.lines.is_empty() || self.rng.chance(40) {
            return self.insert_line();
        }
        let at = self.pick(self.lines.len());
        let (order, n) = self.lines[at];
        if self.rng.chance(30) {
            self.lines.swap_remove(at);
            format!("DELETE FROM lines WHERE order_id = {order} AND n = {n}")
        } else {
            format!("UPDATE lines SET qty = qty + 1 WHERE order_id = {order} AND n = {n}")
        }
    }

    /// One transaction of 1 to 4 statements.
    pub(crate) fn transaction(&mut self) -> String {
        let statements: Vec<String> = (0..self.rng.range(1, 5))
            .map(|_| self.statement())
            .collect();
        format!("BEGIN; {}; COMMIT", statements.join("; "))
    }

    pub(crate) fn truncate_lines(&mut self) -> String {
        self.lines.clear();
        "TRUNCATE lines".into()
    }

    pub(crate) fn truncate_items(&mut self) -> String {
        self.items.clear();
        "TRUNCATE items".into()
    }
}
