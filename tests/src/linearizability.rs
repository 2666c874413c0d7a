//! A WGL/porcupine-style linearizability checker of per-key register histories.
//!
//! A history is a list of [`Operation`]s on registers named by key: read, write, and
//! compare-and-set. Each has a call time and, if the client saw an answer, a return time and
//! output; an operation without an answer (timeout, crash) may have taken effect at any point
//! after its call, or never. Registers are independent, so the history is split per key
//! (P-compositionality) and each key is checked alone.
//!
//! The search is Wing & Gong's, with Lowe's memoization as in porcupine: repeatedly pick an
//! operation that may go first (called before every pending operation returned), apply it to
//! the register if its output agrees, and backtrack on a dead end; a (set of linearized
//! operations, register value) pair already explored is not explored again. The search is
//! bounded by [`SEARCH_STEPS_MAX`]; running out is reported, never taken as a pass.

use std::collections::{BTreeMap, HashSet};

/// Search steps per key before the checker gives up with [`Violation::TooHard`].
pub const SEARCH_STEPS_MAX: u64 = 20_000_000;

/// Register values: the simulator writes unique numbers.
pub type Value = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Read,
    Write(Value),
    /// Set to `new` if the register holds `expected` (None: the key does not exist).
    Cas {
        expected: Option<Value>,
        new: Value,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Read(Option<Value>),
    Write,
    Cas(bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub call: u64,
    /// When the client saw the answer; `None`: it never did (outcome unknown).
    pub ret: Option<u64>,
    pub input: Input,
    /// Meaningful only when `ret` is set.
    pub output: Option<Output>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// No order of this key's operations explains every observed output.
    NotLinearizable { key: String, operations: Vec<Operation> },
    /// The search ran out of steps: neither proven nor refuted.
    TooHard { key: String, operations: usize },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::NotLinearizable { key, operations } => {
                writeln!(f, "key {key}: not linearizable; its operations:")?;
                for op in operations {
                    writeln!(f, "  {op:?}")?;
                }
                Ok(())
            }
            Violation::TooHard { key, operations } => write!(
                f,
                "key {key}: search gave up after {SEARCH_STEPS_MAX} steps ({operations} ops)"
            ),
        }
    }
}

/// Checks a whole history, key by key.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        check_register(key, ops)?;
    }
    Ok(())
}

/// An operation prepared for the search: times as integers, no-answer ops end at infinity.
struct Prepared {
    call: u64,
    ret: u64,
    input: Input,
    output: Option<Output>,
}

fn check_register(key: &str, ops: Vec<Operation>) -> Result<(), Violation> {
    // A read nobody saw the answer of constrains nothing.
    let prepared: Vec<Prepared> = ops
        .iter()
        .filter(|op| op.ret.is_some() || op.input != Input::Read)
        .map(|op| Prepared {
            call: op.call,
            ret: op.ret.unwrap_or(u64::MAX),
            input: op.input,
            output: if op.ret.is_some() { op.output } else { None },
        })
        .collect();
    let mut search = Search { ops: &prepared, seen: HashSet::new(), steps: 0 };
    let done = vec![false; prepared.len()];
    match search.run(done, None) {
        Some(true) => Ok(()),
        Some(false) => Err(Violation::NotLinearizable { key: key.to_string(), operations: ops }),
        None => Err(Violation::TooHard { key: key.to_string(), operations: prepared.len() }),
    }
}

struct Search<'a> {
    ops: &'a [Prepared],
    seen: HashSet<(Vec<u64>, Option<Value>)>,
    steps: u64,
}

impl Search<'_> {
    /// `Some(true)`: a linearization exists; `Some(false)`: none; `None`: out of steps.
    /// Depth-first with an explicit stack, so that long histories do not overflow.
    fn run(&mut self, done: Vec<bool>, state: Option<Value>) -> Option<bool> {
        let mut stack: Vec<(Vec<bool>, Option<Value>)> = vec![(done, state)];
        while let Some((done, state)) = stack.pop() {
            self.steps += 1;
            if self.steps > SEARCH_STEPS_MAX {
                return None;
            }
            // Finished once every answered operation is placed (unanswered ones may never
            // have happened).
            if self.ops.iter().zip(&done).all(|(op, d)| *d || op.output.is_none()) {
                return Some(true);
            }
            let horizon = self
                .ops
                .iter()
                .zip(&done)
                .filter(|(_, d)| !**d)
                .map(|(op, _)| op.ret)
                .min()
                .unwrap_or(u64::MAX);
            for (i, op) in self.ops.iter().enumerate() {
                if done[i] || op.call > horizon {
                    continue;
                }
                let Some(next) = apply(state, op) else {
                    continue;
                };
                let mut d = done.clone();
                d[i] = true;
                let key = (pack(&d), next);
                if self.seen.insert(key) {
                    stack.push((d, next));
                }
            }
        }
        Some(false)
    }
}

fn pack(done: &[bool]) -> Vec<u64> {
    let mut bits = vec![0u64; done.len().div_ceil(64)];
    for (i, d) in done.iter().enumerate() {
        if *d {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

/// The register after `op`, if `op`'s observed output is possible from `state`.
fn apply(state: Option<Value>, op: &Prepared) -> Option<Option<Value>> {
    match (op.input, op.output) {
        (Input::Read, Some(Output::Read(v))) => (v == state).then_some(state),
        (Input::Read, _) => Some(state),
        (Input::Write(v), _) => Some(Some(v)),
        (Input::Cas { expected, new }, Some(Output::Cas(true))) => {
            (state == expected).then_some(Some(new))
        }
        (Input::Cas { expected, .. }, Some(Output::Cas(false))) => {
            (state != expected).then_some(state)
        }
        (Input::Cas { expected, new }, _) => {
            Some(if state == expected { Some(new) } else { state })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, call: u64, ret: Option<u64>, input: Input, output: Output) -> Operation {
        Operation { client, key: "k".to_string(), call, ret, input, output: Some(output) }
    }

    /// A read that overlaps a write may see either value; sequential operations must agree.
    #[test]
    fn accepts_histories_with_valid_orders() {
        let h = vec![
            op(1, 0, Some(10), Input::Write(1), Output::Write),
            op(2, 5, Some(15), Input::Read, Output::Read(Some(1))),
            op(3, 12, Some(30), Input::Write(2), Output::Write),
            op(2, 16, Some(20), Input::Read, Output::Read(Some(1))),
            op(1, 21, Some(25), Input::Read, Output::Read(Some(2))),
            op(2, 31, Some(35), Input::Cas { expected: Some(2), new: 3 }, Output::Cas(true)),
            op(1, 36, Some(40), Input::Cas { expected: Some(2), new: 4 }, Output::Cas(false)),
            op(1, 41, Some(45), Input::Read, Output::Read(Some(3))),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    /// A stale read after a completed write is rejected.
    #[test]
    fn rejects_a_stale_read() {
        let h = vec![
            op(1, 0, Some(10), Input::Write(1), Output::Write),
            op(1, 11, Some(20), Input::Write(2), Output::Write),
            op(2, 21, Some(30), Input::Read, Output::Read(Some(1))),
        ];
        assert!(matches!(check(&h), Err(Violation::NotLinearizable { .. })));
    }

    /// Two reads that see values in opposite orders cannot both be right (the classic
    /// non-linearizable register history), even though each alone is fine.
    #[test]
    fn rejects_reads_that_disagree_on_the_order() {
        let h = vec![
            op(1, 0, Some(100), Input::Write(1), Output::Write),
            op(2, 0, Some(100), Input::Write(2), Output::Write),
            op(3, 10, Some(20), Input::Read, Output::Read(Some(1))),
            op(3, 30, Some(40), Input::Read, Output::Read(Some(2))),
            op(4, 10, Some(20), Input::Read, Output::Read(Some(2))),
            op(4, 30, Some(40), Input::Read, Output::Read(Some(1))),
        ];
        assert!(check(&h).is_err());
    }

    /// A write with no answer may have happened (a later read sees it) or not (reads never
    /// see it); both are fine. A value nobody wrote is never fine.
    #[test]
    fn unanswered_writes_may_or_may_not_have_happened() {
        let unknown = Operation {
            client: 1,
            key: "k".to_string(),
            call: 0,
            ret: None,
            input: Input::Write(7),
            output: None,
        };
        let seen = vec![unknown.clone(), op(2, 50, Some(60), Input::Read, Output::Read(Some(7)))];
        assert_eq!(check(&seen), Ok(()));
        let unseen = vec![unknown.clone(), op(2, 50, Some(60), Input::Read, Output::Read(None))];
        assert_eq!(check(&unseen), Ok(()));
        let invented = vec![unknown, op(2, 50, Some(60), Input::Read, Output::Read(Some(8)))];
        assert!(check(&invented).is_err());
    }

    /// Keys are independent: a violation on one key is found among valid others.
    #[test]
    fn splits_by_key() {
        let mut h = vec![op(1, 0, Some(10), Input::Write(1), Output::Write)];
        let mut other = op(1, 0, Some(10), Input::Write(5), Output::Write);
        other.key = "other".to_string();
        h.push(other);
        h.push(op(2, 20, Some(30), Input::Read, Output::Read(Some(1))));
        let mut bad = op(2, 20, Some(30), Input::Read, Output::Read(Some(1)));
        bad.key = "other".to_string();
        h.push(bad);
        match check(&h) {
            Err(Violation::NotLinearizable { key, .. }) => assert_eq!(key, "other"),
            other => panic!("expected a violation on 'other', got {other:?}"),
        }
    }
}
