//! Issue 6's bank test on real hosts: `shoal-fs` on namespace hosts (see
//! [`crate::jepsen_harness`]), accounts `/acct0..` holding a fixed total, clients in the
//! client namespace moving random amounts between two accounts in lock-based transactions
//! while a seeded nemesis kills (master and followers), pauses, partitions and drops packets.
//!
//! - **Transfer**: `transaction().write(from).write(to).write(marker)`, read the three under
//!   their locks, write both balances and append `<id>:<from>><to>:<amount>;` to the client's
//!   own marker key `/transfers-c<N>`, commit (one entry, only if every lock is still held).
//!   The marker is the transfer's receipt inside the same atomic commit: a half-applied commit
//!   shows as balances that the receipts do not explain.
//! - **Audit**: `transaction().read(every account)`, read them all under shared locks, commit
//!   (which confirms every lock was still held while reading); a confirmed audit must sum to
//!   the total.
//! - **Final** (after healing): every account and marker read linearizably; every node asked
//!   directly at that zxid must hold the same values.
//!
//! The checker ([`check`]) is pure; its rules are on [`BankAnomaly`].

use crate::jepsen::join_all;
use crate::jepsen_harness::{
    self, bounded, connect, final_read, replica_check, write_history, Checked, Ctx, HarnessOptions,
    Workload, FINAL_LOCK_WAIT_MS, FINAL_READ_LIMIT_MS, LOCK_TTL_MS, OP_LIMIT_MS,
};
use crate::nemesis::{FaultKind, ScheduleBounds};
use crate::netns::NetnsError;
use crate::report::{self, Sample};
use cache_client::net::SocketTransport;
use cache_client::{Batch, Client, ClientError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a transaction waits for each contended lock.
pub const TXN_WAIT_MS: u64 = 2_000;
/// Largest amount one transfer moves.
pub const AMOUNT_MAX: u64 = 30;
/// Attempts at writing the opening balances before the run gives up.
pub const SETUP_ATTEMPTS_MAX: usize = 20;

/// What one seeded bank run does.
#[derive(Clone, Debug)]
pub struct BankOptions {
    pub seed: u64,
    pub hosts: usize,
    pub bounds: ScheduleBounds,
    pub kinds: Vec<FaultKind>,
    pub clients: usize,
    pub accounts: usize,
    /// The sum of all balances (split evenly at the start; a multiple of `accounts`).
    pub total: u64,
    /// Percentage of rounds that audit every account instead of transferring.
    pub audit_percent: u32,
    pub quiet_ms: u64,
    /// Percentage of drawn faults replaced by cutting the clients off every host.
    pub client_cut_percent: u32,
    pub out_dir: PathBuf,
}

impl BankOptions {
    /// A CI-sized run: 3 hosts, up to 5 faults in 15 s, 5 clients, 5 accounts holding 500.
    pub fn new(seed: u64) -> BankOptions {
        BankOptions {
            seed,
            hosts: 3,
            bounds: ScheduleBounds { run_ms: 15_000, faults_max: 5, ..ScheduleBounds::default() },
            kinds: FaultKind::REGISTERS.to_vec(),
            clients: 5,
            accounts: 5,
            total: 500,
            audit_percent: 25,
            quiet_ms: 3_000,
            client_cut_percent: 20,
            out_dir: PathBuf::from("target/jepsen"),
        }
    }
}

pub fn account(i: usize) -> String {
    format!("/acct{i}")
}

pub fn marker(client: u64) -> String {
    format!("/transfers-c{client}")
}

/// How a transfer's commit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed(u64),
    /// Refused (a lock was lost): nothing changed.
    Refused,
    /// No definite answer.
    Unknown,
}

/// One transfer that reached its commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub client: u64,
    pub id: String,
    pub from: usize,
    pub to: usize,
    pub amount: u64,
    pub call_us: u64,
    pub end_us: u64,
    pub outcome: TxnOutcome,
}

impl Transfer {
    /// The receipt appended to the client's marker.
    pub fn receipt(&self) -> String {
        format!("{}:{}>{}:{};", self.id, self.from, self.to, self.amount)
    }
}

/// Parses a marker's receipts: (id, from, to, amount); `None` when it is not a marker.
pub fn parse_receipts(text: &str) -> Option<Vec<(String, usize, usize, u64)>> {
    let mut receipts = Vec::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (id, rest) = part.split_once(':')?;
        let (accounts, amount) = rest.split_once(':')?;
        let (from, to) = accounts.split_once('>')?;
        receipts.push((id.to_string(), from.parse().ok()?, to.parse().ok()?, amount.parse().ok()?));
    }
    Some(receipts)
}

/// A confirmed audit: every balance read under shared locks that the commit proved held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub client: u64,
    pub call_us: u64,
    pub end_us: u64,
    /// `None` where the value was not a balance (absent or garbage).
    pub balances: Vec<Option<u64>>,
}

/// The state read after healing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalState {
    /// Per account (`None`: absent or garbage).
    pub balances: Vec<Option<u64>>,
    /// Per client with a marker: its text.
    pub markers: BTreeMap<u64, String>,
}

/// A broken promise of the bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankAnomaly {
    /// A confirmed audit whose balances do not sum to the total (or are not balances).
    AuditTotal { audit: Audit, sum: Option<u64> },
    /// The final balances do not sum to the total.
    FinalTotal { balances: Vec<Option<u64>> },
    /// The final balances differ from the opening ones moved by every receipt: a commit
    /// changed balances without its receipt, or wrote a receipt without its balances.
    HalfApplied { account: usize, expected: i128, found: Option<u64> },
    /// An acknowledged transfer's receipt is missing.
    LostCommit { transfer: Transfer },
    /// A refused transfer's receipt is there.
    RefusedApplied { transfer: Transfer },
    /// A receipt no transfer attempt made (or with other accounts or amount), or one twice.
    BadReceipt { client: u64, receipt: String },
}

impl fmt::Display for BankAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankAnomaly::AuditTotal { audit, sum } => write!(
                f,
                "audit by c{} at {:.3} ms read {:?}, sum {sum:?}",
                audit.client,
                audit.end_us as f64 / 1000.0,
                audit.balances
            ),
            BankAnomaly::FinalTotal { balances } => {
                write!(f, "final balances {balances:?} do not sum to the total")
            }
            BankAnomaly::HalfApplied { account, expected, found } => write!(
                f,
                "account {account} holds {found:?} at the end, the receipts explain {expected}: \
                 a half-applied commit"
            ),
            BankAnomaly::LostCommit { transfer } => {
                write!(f, "acknowledged transfer {} has no receipt", transfer.receipt())
            }
            BankAnomaly::RefusedApplied { transfer } => {
                write!(f, "refused transfer {} has a receipt", transfer.receipt())
            }
            BankAnomaly::BadReceipt { client, receipt } => {
                write!(f, "marker of c{client} holds {receipt:?}, which no transfer explains")
            }
        }
    }
}

/// Checks a bank history: every confirmed audit and the final state sum to `total`; the final
/// balances equal the opening ones (`total / accounts` each) moved by every receipt; every
/// acknowledged transfer has its receipt, no refused one does, and every receipt is one a
/// client attempted, once. `finals` is `None` when the final reads failed (only audits are
/// checked then).
pub fn check(
    accounts: usize,
    total: u64,
    transfers: &[Transfer],
    audits: &[Audit],
    finals: Option<&FinalState>,
) -> Vec<BankAnomaly> {
    let mut anomalies = Vec::new();
    let sum = |balances: &[Option<u64>]| balances.iter().try_fold(0u64, |s, b| Some(s + (*b)?));
    for audit in audits {
        let s = sum(&audit.balances);
        if s != Some(total) || audit.balances.len() != accounts {
            anomalies.push(BankAnomaly::AuditTotal { audit: audit.clone(), sum: s });
        }
    }
    let Some(finals) = finals else { return anomalies };
    if sum(&finals.balances) != Some(total) || finals.balances.len() != accounts {
        anomalies.push(BankAnomaly::FinalTotal { balances: finals.balances.clone() });
    }
    let attempts: HashMap<&str, &Transfer> = transfers.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut expected: Vec<i128> = vec![i128::from(total / accounts.max(1) as u64); accounts];
    let mut receipted: HashMap<String, u64> = HashMap::new();
    for (client, text) in &finals.markers {
        let Some(receipts) = parse_receipts(text) else {
            anomalies.push(BankAnomaly::BadReceipt { client: *client, receipt: text.clone() });
            continue;
        };
        for (id, from, to, amount) in receipts {
            let matches = attempts.get(id.as_str()).is_some_and(|t| {
                t.client == *client && t.from == from && t.to == to && t.amount == amount
            });
            let fresh = receipted.insert(id.clone(), *client).is_none();
            if !matches || !fresh || from >= accounts || to >= accounts {
                let receipt = format!("{id}:{from}>{to}:{amount}");
                anomalies.push(BankAnomaly::BadReceipt { client: *client, receipt });
            }
            if from < accounts && to < accounts {
                expected[from] -= i128::from(amount);
                expected[to] += i128::from(amount);
            }
        }
    }
    for (account, (want, found)) in expected.iter().zip(&finals.balances).enumerate() {
        if found.map(i128::from) != Some(*want) {
            anomalies.push(BankAnomaly::HalfApplied { account, expected: *want, found: *found });
        }
    }
    for t in transfers {
        let has = receipted.contains_key(&t.id);
        match t.outcome {
            TxnOutcome::Committed(_) if !has => {
                anomalies.push(BankAnomaly::LostCommit { transfer: t.clone() })
            }
            TxnOutcome::Refused if has => {
                anomalies.push(BankAnomaly::RefusedApplied { transfer: t.clone() })
            }
            _ => {}
        }
    }
    anomalies
}

/// Counts of what happened, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankCounts {
    pub committed: usize,
    pub refused: usize,
    pub unknown: usize,
    /// Transactions that could not take their locks or read (nothing committed).
    pub aborted: usize,
    pub audits_confirmed: usize,
    pub audits_unconfirmed: usize,
}

impl fmt::Display for BankCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transfers committed {}, refused {}, unknown {}, aborted before commit {}; audits \
             confirmed {}, unconfirmed {}",
            self.committed,
            self.refused,
            self.unknown,
            self.aborted,
            self.audits_confirmed,
            self.audits_unconfirmed
        )
    }
}

/// What the workers recorded.
#[derive(Debug, Default)]
pub struct BankLog {
    pub transfers: Vec<Transfer>,
    pub audits: Vec<Audit>,
    pub samples: Vec<Sample>,
    pub counts: BankCounts,
}

/// What a run produced (`finals`: the balances read after healing, `None` when they could
/// not be read; `unavailability`: the longest stretch without a committed transfer).
pub type BankOutcome = Checked<BankLog, Option<FinalState>, BankAnomaly>;

struct BankWorkload {
    options: BankOptions,
    clients: Vec<Client<SocketTransport>>,
}

struct Output {
    log: BankLog,
    finals: Option<FinalState>,
    final_problems: Vec<String>,
}

fn parse_balance(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}

impl Workload for BankWorkload {
    type Output = Output;

    async fn prepare(&mut self, cluster_file: &Path) -> Result<(), String> {
        for _ in 0..self.options.clients {
            self.clients.push(connect(cluster_file).await.map_err(|e| e.to_string())?);
        }
        let opening = self.options.total / self.options.accounts as u64;
        let mut batch = Batch::new();
        for i in 0..self.options.accounts {
            batch = batch.write(account(i), opening.to_string());
        }
        let mut last = String::new();
        for _ in 0..SETUP_ATTEMPTS_MAX {
            // One request id per attempt: a repeat writes the same opening balances.
            match bounded(OP_LIMIT_MS, self.clients[0].batch(batch.clone())).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("opening balances not written: {last}"))
    }

    async fn run(self, ctx: &Ctx) -> Output {
        let mut workers = Vec::new();
        for (index, client) in self.clients.into_iter().enumerate() {
            let worker = BankWorker {
                index: index as u64,
                client,
                accounts: self.options.accounts,
                audit_percent: self.options.audit_percent,
                rng: StdRng::seed_from_u64(ctx.seed ^ ((index as u64 + 1) << 40)),
                next_id: 0,
                log: BankLog::default(),
            };
            workers.push(worker.run(ctx));
        }
        let mut log = BankLog::default();
        for w in join_all(workers).await {
            log.transfers.extend(w.transfers);
            log.audits.extend(w.audits);
            log.samples.extend(w.samples);
            let (c, o) = (&mut log.counts, &w.counts);
            c.committed += o.committed;
            c.refused += o.refused;
            c.unknown += o.unknown;
            c.aborted += o.aborted;
            c.audits_confirmed += o.audits_confirmed;
            c.audits_unconfirmed += o.audits_unconfirmed;
        }
        let mut final_problems = Vec::new();
        if ctx.aborted() {
            return Output { log, finals: None, final_problems };
        }
        let reader = match connect(&ctx.cluster_file).await {
            Ok(c) => c,
            Err(e) => {
                final_problems.push(format!("cannot connect the final reader: {e}"));
                return Output { log, finals: None, final_problems };
            }
        };
        let keys: Vec<String> = (0..self.options.accounts)
            .map(account)
            .chain((0..self.options.clients as u64).map(marker))
            .collect();
        let mut expected = Vec::new();
        let mut floor = reader.floor();
        for key in &keys {
            match final_read(&reader, key, FINAL_READ_LIMIT_MS).await {
                Ok(v) => {
                    if let Some(v) = &v {
                        floor = floor.max(v.zxid);
                    }
                    expected.push((key.clone(), v.map(|v| v.value)));
                }
                Err(e) => final_problems.push(format!("final read of {key}: {e}")),
            }
        }
        if expected.len() != keys.len() {
            return Output { log, finals: None, final_problems };
        }
        let balances = expected[..self.options.accounts]
            .iter()
            .map(|(_, v)| parse_balance(v.as_deref()))
            .collect();
        let markers = expected[self.options.accounts..]
            .iter()
            .enumerate()
            .filter_map(|(client, (_, v))| {
                Some((client as u64, String::from_utf8_lossy(v.as_ref()?).into_owned()))
            })
            .collect();
        final_problems.extend(replica_check(&ctx.cluster_file, floor, &expected).await);
        // Liveness after healing: every account can be locked for writing again.
        let wait = Duration::from_millis(FINAL_LOCK_WAIT_MS);
        let mut builder = reader.transaction().wait(wait);
        for i in 0..self.options.accounts {
            builder = builder.write(account(i));
        }
        match bounded(FINAL_LOCK_WAIT_MS * self.options.accounts as u64, builder.begin()).await {
            Ok(Ok(txn)) => {
                let _ = bounded(OP_LIMIT_MS, txn.cancel()).await;
            }
            Ok(Err(e)) => final_problems.push(format!("accounts not lockable after healing: {e}")),
            Err(e) => final_problems.push(format!("accounts not lockable after healing: {e}")),
        }
        Output { log, finals: Some(FinalState { balances, markers }), final_problems }
    }
}

struct BankWorker {
    index: u64,
    client: Client<SocketTransport>,
    accounts: usize,
    audit_percent: u32,
    rng: StdRng,
    next_id: u64,
    log: BankLog,
}

impl BankWorker {
    fn sample(&mut self, ctx: &Ctx, op: &str, call_us: u64, ok: bool) {
        let end_us = ctx.now_us();
        let latency_us = end_us.saturating_sub(call_us);
        self.log.samples.push(Sample {
            at_ms: end_us / 1000,
            op: op.into(),
            latency_us,
            outcome: ok.into(),
        });
    }

    async fn run(mut self, ctx: &Ctx) -> BankLog {
        while ctx.running() {
            if self.rng.gen_range(0..100) < self.audit_percent {
                self.audit(ctx).await;
            } else {
                self.transfer(ctx).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log
    }

    /// One transfer; recorded if it reached its commit.
    async fn transfer(&mut self, ctx: &Ctx) {
        let from = self.rng.gen_range(0..self.accounts);
        let to = (from + self.rng.gen_range(1..self.accounts)) % self.accounts;
        let wanted = self.rng.gen_range(1..=AMOUNT_MAX);
        let own = marker(self.index);
        let call_us = ctx.now_us();
        let begin = self
            .client
            .transaction()
            .write(account(from))
            .write(account(to))
            .write(own.clone())
            .wait(Duration::from_millis(TXN_WAIT_MS))
            .begin();
        let mut txn = match bounded(OP_LIMIT_MS, begin).await {
            Ok(Ok(txn)) => txn,
            _ => {
                self.log.counts.aborted += 1;
                self.sample(ctx, "transfer", call_us, false);
                return;
            }
        };
        let mut values = Vec::new();
        for key in [account(from), account(to), own.clone()] {
            match bounded(OP_LIMIT_MS, txn.read(&key)).await {
                Ok(Ok(v)) => values.push(v),
                _ => break,
            }
        }
        let (balance_from, balance_to) = match values.as_slice() {
            [f, t, _] => (parse_balance(f.as_deref()), parse_balance(t.as_deref())),
            _ => (None, None),
        };
        let (Some(balance_from), Some(balance_to)) = (balance_from, balance_to) else {
            // A read failed (or a balance is garbage, which the final check will show).
            let _ = bounded(OP_LIMIT_MS, txn.cancel()).await;
            self.log.counts.aborted += 1;
            self.sample(ctx, "transfer", call_us, false);
            return;
        };
        let amount = wanted.min(balance_from);
        self.next_id += 1;
        let mut transfer = Transfer {
            client: self.index,
            id: format!("c{}n{}", self.index, self.next_id),
            from,
            to,
            amount,
            call_us,
            end_us: 0,
            outcome: TxnOutcome::Unknown,
        };
        let receipts = values[2].as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
        let receipts = format!("{}{}", receipts.unwrap_or_default(), transfer.receipt());
        let writes = [
            txn.write(&account(from), (balance_from - amount).to_string()),
            txn.write(&account(to), (balance_to + amount).to_string()),
            txn.write(&own, receipts),
        ];
        if writes.iter().any(Result::is_err) {
            let _ = bounded(OP_LIMIT_MS, txn.cancel()).await;
            self.log.counts.aborted += 1;
            self.sample(ctx, "transfer", call_us, false);
            return;
        }
        transfer.outcome = match bounded(OP_LIMIT_MS, txn.commit()).await {
            Ok(Ok(zxid)) => TxnOutcome::Committed(zxid.0),
            Ok(Err(
                ClientError::LockLost { .. }
                | ClientError::ConditionFailed { .. }
                | ClientError::BadAuth { .. },
            )) => TxnOutcome::Refused,
            Ok(Err(_)) | Err(_) => TxnOutcome::Unknown,
        };
        transfer.end_us = ctx.now_us();
        match transfer.outcome {
            TxnOutcome::Committed(_) => self.log.counts.committed += 1,
            TxnOutcome::Refused => self.log.counts.refused += 1,
            TxnOutcome::Unknown => self.log.counts.unknown += 1,
        }
        let ok = matches!(transfer.outcome, TxnOutcome::Committed(_));
        self.sample(ctx, "transfer", call_us, ok);
        self.log.transfers.push(transfer);
    }

    /// Reads every account under shared locks; recorded when the commit confirms the locks.
    async fn audit(&mut self, ctx: &Ctx) {
        let call_us = ctx.now_us();
        let mut builder = self.client.transaction().wait(Duration::from_millis(TXN_WAIT_MS));
        for i in 0..self.accounts {
            builder = builder.read(account(i));
        }
        let Ok(Ok(txn)) = bounded(OP_LIMIT_MS, builder.begin()).await else {
            self.log.counts.audits_unconfirmed += 1;
            self.sample(ctx, "audit", call_us, false);
            return;
        };
        let mut balances = Vec::new();
        for i in 0..self.accounts {
            match bounded(OP_LIMIT_MS, txn.read(&account(i))).await {
                Ok(Ok(v)) => balances.push(parse_balance(v.as_deref())),
                _ => break,
            }
        }
        let complete = balances.len() == self.accounts;
        let confirmed = complete && matches!(bounded(OP_LIMIT_MS, txn.commit()).await, Ok(Ok(_)));
        self.sample(ctx, "audit", call_us, confirmed);
        if confirmed {
            self.log.counts.audits_confirmed += 1;
            let end_us = ctx.now_us();
            self.log.audits.push(Audit { client: self.index, call_us, end_us, balances });
        } else {
            self.log.counts.audits_unconfirmed += 1;
        }
    }
}

/// Runs one seeded bank run, checks it with [`check`], writes the report
/// (`bank-seed<N>-n<H>.{svg,txt,history}`).
pub fn run_bank(
    options: &BankOptions,
    shoal_fs: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<BankOutcome, NetnsError> {
    let harness = HarnessOptions {
        seed: options.seed,
        hosts: options.hosts,
        bounds: options.bounds.clone(),
        kinds: options.kinds.clone(),
        quiet_ms: options.quiet_ms,
        node_args: vec!["--lock-ttl-ms".into(), LOCK_TTL_MS.to_string()],
        client_cut_percent: options.client_cut_percent,
        scenario: crate::nemesis::Scenario::Drawn,
    };
    let workload = BankWorkload { options: options.clone(), clients: Vec::new() };
    let ran = jepsen_harness::run(&harness, shoal_fs, stop, workload)?;
    let Output { mut log, finals, final_problems } = ran.output;
    log.transfers.sort_by_key(|t| t.call_us);
    log.samples.sort_by_key(|s| s.at_ms);
    let anomalies =
        check(options.accounts, options.total, &log.transfers, &log.audits, finals.as_ref());
    let passed = anomalies.is_empty() && final_problems.is_empty() && !ran.interrupted;
    let name = format!("bank-seed{}-n{}", options.seed, options.hosts);
    let title = format!(
        "shoal-fs bank, {} hosts, seed {}: {} committed, {} audits, {}",
        options.hosts,
        options.seed,
        log.counts.committed,
        log.counts.audits_confirmed,
        if passed { "PASS" } else { "FAIL" }
    );
    let (svg, summary) =
        report::write(&options.out_dir, &name, &title, &log.samples, &ran.windows)?;
    let lines: Vec<(u64, String)> = log
        .transfers
        .iter()
        .map(|t| {
            let text = format!(
                "c{} transfer {} [{:.3}..{:.3} ms] {:?}",
                t.client,
                t.receipt(),
                t.call_us as f64 / 1000.0,
                t.end_us as f64 / 1000.0,
                t.outcome
            );
            (t.end_us, text)
        })
        .chain(log.audits.iter().map(|a| {
            let text = format!(
                "c{} audit [{:.3} ms] {:?}",
                a.client,
                a.end_us as f64 / 1000.0,
                a.balances
            );
            (a.end_us, text)
        }))
        .collect();
    write_history(&options.out_dir, &name, lines, [format!("final {finals:?}")])?;
    let acked_ms: Vec<u64> = log
        .transfers
        .iter()
        .filter(|t| matches!(t.outcome, TxnOutcome::Committed(_)))
        .map(|t| t.end_us / 1000)
        .collect();
    let unavailability = jepsen_harness::unavailability(&acked_ms, &ran.windows);
    Ok(BankOutcome {
        schedule: ran.schedule,
        windows: ran.windows,
        log,
        finals,
        anomalies,
        final_problems,
        unavailability,
        summary,
        svg,
        interrupted: ran.interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(
        client: u64,
        n: u64,
        from: usize,
        to: usize,
        amount: u64,
        outcome: TxnOutcome,
    ) -> Transfer {
        Transfer {
            client,
            id: format!("c{client}n{n}"),
            from,
            to,
            amount,
            call_us: 0,
            end_us: 0,
            outcome,
        }
    }

    /// Three accounts of 10: c0 moved 3 from 0 to 1 (committed), c1 moved 5 from 2 to 0
    /// (unknown, and it did commit), c1's second transfer was refused; audits sum to 30.
    fn history() -> (Vec<Transfer>, Vec<Audit>, FinalState) {
        let transfers = vec![
            transfer(0, 1, 0, 1, 3, TxnOutcome::Committed(7)),
            transfer(1, 1, 2, 0, 5, TxnOutcome::Unknown),
            transfer(1, 2, 1, 2, 4, TxnOutcome::Refused),
        ];
        let audits = vec![Audit {
            client: 2,
            call_us: 0,
            end_us: 1,
            balances: vec![Some(7), Some(13), Some(10)],
        }];
        let finals = FinalState {
            balances: vec![Some(12), Some(13), Some(5)],
            markers: BTreeMap::from([(0, transfers[0].receipt()), (1, transfers[1].receipt())]),
        };
        (transfers, audits, finals)
    }

    /// The baseline: a consistent history has no anomaly (an unknown commit may have applied).
    #[test]
    fn consistent_bank_history_passes() {
        let (transfers, audits, finals) = history();
        assert_eq!(check(3, 30, &transfers, &audits, Some(&finals)), Vec::new());
        assert_eq!(parse_receipts("c0n1:0>1:3;").unwrap(), vec![("c0n1".into(), 0, 1, 3)]);
    }

    /// An audit or a final state that does not sum to the total is flagged.
    #[test]
    fn totals_are_checked() {
        let (transfers, mut audits, mut finals) = history();
        audits[0].balances[0] = Some(8);
        finals.balances[2] = Some(6);
        let anomalies = check(3, 30, &transfers, &audits, Some(&finals));
        assert!(anomalies.iter().any(|a| matches!(a, BankAnomaly::AuditTotal { .. })));
        assert!(anomalies.iter().any(|a| matches!(a, BankAnomaly::FinalTotal { .. })));
    }

    /// Half-applied commits: a receipt without its balance changes, and balance changes
    /// without a receipt, are both flagged even when the total is intact.
    #[test]
    fn half_applied_commits_are_detected() {
        let (transfers, audits, mut finals) = history();
        // c1's unknown transfer left its receipt but not its balances.
        finals.balances = vec![Some(7), Some(13), Some(10)];
        let anomalies = check(3, 30, &transfers, &audits, Some(&finals));
        assert!(
            anomalies.iter().any(|a| matches!(a, BankAnomaly::HalfApplied { account: 0, .. })),
            "{anomalies:?}"
        );
        let (transfers, audits, mut finals) = history();
        // Balances moved, receipt missing.
        finals.markers.remove(&1);
        let anomalies = check(3, 30, &transfers, &audits, Some(&finals));
        assert!(anomalies.iter().any(|a| matches!(a, BankAnomaly::HalfApplied { .. })));
    }

    /// A lost acknowledged commit, an applied refused one and a receipt nobody attempted (or
    /// twice) are each flagged.
    #[test]
    fn receipts_are_checked() {
        let (transfers, audits, mut finals) = history();
        finals.markers.remove(&0);
        finals.balances = vec![Some(15), Some(10), Some(5)];
        let anomalies = check(3, 30, &transfers, &audits, Some(&finals));
        assert!(matches!(anomalies.as_slice(), [BankAnomaly::LostCommit { .. }]), "{anomalies:?}");
        let (transfers, audits, mut finals) = history();
        let refused = transfers[2].receipt();
        finals.markers.get_mut(&1).unwrap().push_str(&refused);
        finals.balances = vec![Some(12), Some(9), Some(9)];
        let anomalies = check(3, 30, &transfers, &audits, Some(&finals));
        assert!(
            matches!(anomalies.as_slice(), [BankAnomaly::RefusedApplied { .. }]),
            "{anomalies:?}"
        );
        let (transfers, audits, mut finals) = history();
        let twice = finals.markers[&0].clone();
        finals.markers.get_mut(&0).unwrap().push_str(&twice);
        finals.balances = vec![Some(9), Some(16), Some(5)];
        let anomalies = check(3, 30, &transfers, &audits, Some(&finals));
        assert!(matches!(anomalies.as_slice(), [BankAnomaly::BadReceipt { .. }]), "{anomalies:?}");
    }
}
