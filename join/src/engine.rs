//! The pairing state machine of one join rule: records in, pairs out, exactly
//! the pair set of `docs/join-spec.md`, each pair once, as soon as it is
//! certain.
//!
//! Per key, each side keeps a deque of records sorted by time. When a record
//! `z` arrives on side S (the other side is O):
//! 1. the *pending* records of O (those newer than everything S had: they
//!    were waiting for their `next`) with `o.t <= z.t` now have `next = z`;
//!    their pair with `z` is emitted, and so is their pair with `prev`,
//!    which is S's last record before `z` (certain only now);
//! 2. `z`'s own `next` (first O record with `o.t >= z.t`) and, when that
//!    exists, `prev` (last O record with `o.t < z.t`) are looked up and
//!    paired; otherwise `z` becomes pending.
//!
//! A pair can be produced by up to two of these rules (e.g. `next(l) = r`
//! and `prev(r) = l`). Each record remembers the partner of its `next` and
//! `prev` pairs, and a rule skips a pair its partner already produced.
//!
//! State: a side keeps only its records at or after the other side's newest
//! time, plus the last one before it; nothing older can pair with a future
//! arrival. When both sides progress together that is a few records a key.
//!
//! With a horizon H (`stateHorizon`), state stays bounded also when a side
//! goes quiet. The key's *stream time* S is the newest time accepted on
//! either side. A record arriving older than S - H is late "beyond the
//! horizon". No pair spans more than the *pair limit* C = min(maxDelta, H).
//! A held record older than S - H - C expires: a pending one first gets its
//! `prev` pair (flagged `expired`), then it is dropped. Why H + C and not H:
//! a record accepted later is at least S - H, so anything it could pair with
//! and that is older than S - H - C is more than C away, a pair no
//! interleaving emits. That keeps the output a function of the records
//! alone for every arrival order in which no record arrives beyond the
//! horizon (`docs/join-spec.md`, "Bounded state").

use std::collections::VecDeque;

/// Epoch nanoseconds.
pub type Time = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    fn index(self) -> usize {
        self as usize
    }
    fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

const NONE: u64 = u64::MAX;

struct Rec<P> {
    t: Time,
    seq: u64,
    /// Arrival number on its side of its key: the record's identity.
    id: u64,
    next_partner: u64,
    prev_partner: u64,
    payload: P,
}

struct SideState<P> {
    recs: VecDeque<Rec<P>>,
    newest: Option<Time>,
    arrivals: u64,
}

impl<P> Default for SideState<P> {
    fn default() -> Self {
        Self { recs: VecDeque::new(), newest: None, arrivals: 0 }
    }
}

/// One emitted pair, borrowed from the state for the duration of the call.
pub struct PairRef<'a, P> {
    pub left: &'a P,
    pub left_time: Time,
    pub right: &'a P,
    pub right_time: Time,
    /// `seq` of the arrival that made the pair certain.
    pub trigger: u64,
    /// Emitted by `maxLatency` (or `complete`) before its `next` arrived.
    pub early: bool,
    /// Emitted because its record expired beyond the horizon, without its
    /// `next`.
    pub expired: bool,
}

/// A record that cannot be joined because of when it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Late {
    pub time: Time,
    /// `OwnSide`: the side's newest accepted time; `BeyondHorizon`: the
    /// key's stream time (newest on either side).
    pub newest: Time,
    pub why: LateWhy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateWhy {
    /// Older than the newest accepted record of its own side and key.
    OwnSide,
    /// Older than the key's stream time minus the rule's horizon (carried).
    BeyondHorizon { horizon: Time },
}

/// Settings of one rule's pairing.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairingOptions {
    /// Drop pairs further apart than this (nanoseconds).
    pub max_delta: Option<Time>,
    /// Emit a pending record's `prev` pair once its key's newest time is
    /// more than this past it, without waiting for its `next`.
    pub max_latency: Option<Time>,
    /// Hold records until their side has seen a record this much newer, so
    /// that ones arriving slightly out of order are put back in order
    /// instead of being late. Delays every pair by about this much.
    pub reorder_window: Option<Time>,
    /// `stateHorizon`: how far behind its key's stream time a record may be
    /// held or accepted (see the module docs). `None`: unbounded.
    pub horizon: Option<Time>,
}

impl PairingOptions {
    /// No pair spans more than this: `maxDelta`, capped by the horizon.
    pub fn pair_limit(&self) -> Option<Time> {
        match (self.max_delta, self.horizon) {
            (Some(d), Some(h)) => Some(d.min(h)),
            (d, h) => d.or(h),
        }
    }

    /// Records older than `stream - this` are dropped (`None`: never).
    fn expiry_age(&self) -> Option<Time> {
        let h = self.horizon?;
        Some(h.saturating_add(self.pair_limit().unwrap_or(h)))
    }
}

/// The state of one key of one rule.
pub struct KeyState<P> {
    sides: [SideState<P>; 2],
}

impl<P> Default for KeyState<P> {
    fn default() -> Self {
        Self { sides: [SideState::default(), SideState::default()] }
    }
}

impl<P> KeyState<P> {
    /// Accepts a record, or reports it late. `emit` receives every pair that
    /// this arrival made certain. Ok: how many held records expired.
    pub fn push(
        &mut self,
        side: Side,
        t: Time,
        seq: u64,
        payload: P,
        options: &PairingOptions,
        emit: &mut impl FnMut(PairRef<'_, P>),
    ) -> Result<usize, Late> {
        self.push_triggered(side, t, seq, seq, payload, options, emit)
    }

    /// `push` of a record released (from a reorder buffer) by the arrival
    /// `trigger`: its pairs are certain from that arrival on.
    #[allow(clippy::too_many_arguments)]
    fn push_triggered(
        &mut self,
        side: Side,
        t: Time,
        seq: u64,
        trigger: u64,
        payload: P,
        options: &PairingOptions,
        emit: &mut impl FnMut(PairRef<'_, P>),
    ) -> Result<usize, Late> {
        self.refuse_late(side, t, options)?;
        let s_idx = side.index();
        let [a, b] = &mut self.sides;
        let (s, o) = if s_idx == 0 { (a, b) } else { (b, a) };
        let z_id = s.arrivals;
        s.arrivals += 1;
        let mut z = Rec { t, seq, id: z_id, next_partner: NONE, prev_partner: NONE, payload };

        // 1. O's pending records that `z` is the `next` of.
        let pending_from = match s.newest {
            Some(newest) => o.recs.partition_point(|r| r.t <= newest),
            None => 0,
        };
        for i in pending_from..o.recs.len() {
            if o.recs[i].t > t {
                break;
            }
            let or = &mut o.recs[i];
            or.next_partner = z_id;
            emit_pair(side.other(), or, &z, trigger, false, false, options, emit);
            if let Some(sl) = s.recs.back_mut() {
                if sl.next_partner != or.id && or.prev_partner != sl.id {
                    emit_pair(side.other(), or, sl, trigger, false, false, options, emit);
                }
                or.prev_partner = sl.id;
            }
        }

        // 2. `z`'s own next and prev.
        let next = o.recs.partition_point(|r| r.t < t);
        if next < o.recs.len() {
            let or = &o.recs[next];
            if or.next_partner != z_id {
                emit_pair(side, &z, or, trigger, false, false, options, emit);
            }
            z.next_partner = or.id;
            if next > 0 {
                let p = &o.recs[next - 1];
                if p.next_partner != z_id {
                    emit_pair(side, &z, p, trigger, false, false, options, emit);
                }
                z.prev_partner = p.id;
            }
        }
        s.recs.push_back(z);
        s.newest = Some(t);

        if let Some(w) = options.max_latency {
            self.emit_overdue(t.saturating_sub(w), trigger, false, options, emit);
        }
        let expired = match (options.expiry_age(), self.stream_time()) {
            (Some(age), Some(stream)) => self.expire(stream.saturating_sub(age), trigger, options, emit),
            _ => 0,
        };
        self.evict();
        Ok(expired)
    }

    /// The horizon's sweep: pending records older than `before` get their
    /// `prev` pair, then every record older than `before` is dropped, except
    /// a side's last record while the other side holds pending records that
    /// stay and that it is within the pair limit of (it is their `prev`),
    /// and the other side's records from that record's time on. Returns how
    /// many records were dropped.
    fn expire(&mut self, before: Time, seq: u64, options: &PairingOptions, emit: &mut impl FnMut(PairRef<'_, P>)) -> usize {
        if self.sides.iter().all(|s| s.recs.front().is_none_or(|r| r.t >= before)) {
            return 0;
        }
        self.emit_overdue(before, seq, true, options, emit);
        let limit = options.pair_limit();
        // Per side, records at or after this time stay although older than
        // `before`.
        let mut floor: [Option<Time>; 2] = [None, None];
        for (x, y) in [(0, 1), (1, 0)] {
            let x_newest = self.sides[x].newest;
            // x's last is the `prev` of y's pending records: it stays while
            // the oldest of them that stays is within the pair limit of it,
            // and so does its own `next` on y (a replay from the oldest held
            // record must find x's last already paired with its next).
            let ys = &self.sides[y].recs;
            let first_staying = ys.get(ys.partition_point(|r| r.t < before || x_newest.is_some_and(|n| r.t <= n)));
            if let (Some(p), Some(last)) = (first_staying, self.sides[x].recs.back()) {
                if limit.is_none_or(|c| p.t - last.t <= c) {
                    for side in [x, y] {
                        floor[side] = Some(floor[side].map_or(last.t, |f: Time| f.min(last.t)));
                    }
                }
            }
        }
        let mut dropped = 0;
        for (side, floor) in floor.iter().enumerate() {
            let recs = &mut self.sides[side].recs;
            while recs.front().is_some_and(|r| r.t < before && floor.is_none_or(|f| r.t < f)) {
                recs.pop_front();
                dropped += 1;
            }
        }
        dropped
    }

    /// Whether a record at `t` on `side` can still be accepted: not older
    /// than its side's newest, nor beyond the horizon of the key's stream
    /// time.
    fn refuse_late(&self, side: Side, t: Time, options: &PairingOptions) -> Result<(), Late> {
        if let Some(newest) = self.sides[side.index()].newest {
            if t < newest {
                return Err(Late { time: t, newest, why: LateWhy::OwnSide });
            }
        }
        if let (Some(horizon), Some(stream)) = (options.horizon, self.stream_time()) {
            if t < stream.saturating_sub(horizon) {
                return Err(Late { time: t, newest: stream, why: LateWhy::BeyondHorizon { horizon } });
            }
        }
        Ok(())
    }

    /// Newest time accepted on either side.
    pub fn stream_time(&self) -> Option<Time> {
        match (self.sides[0].newest, self.sides[1].newest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Emits the `prev` pairs of pending records older than `before`
    /// (`maxLatency`, `complete`, or expiry when `expired`), marking them so
    /// that they are not emitted again.
    fn emit_overdue(&mut self, before: Time, seq: u64, expired: bool, options: &PairingOptions, emit: &mut impl FnMut(PairRef<'_, P>)) {
        for side in [Side::Left, Side::Right] {
            let [a, b] = &mut self.sides;
            let (x, y) = if side == Side::Left { (a, b) } else { (b, a) };
            let Some(last) = y.recs.back() else { continue };
            let from = match y.newest {
                Some(newest) => x.recs.partition_point(|r| r.t <= newest),
                None => 0,
            };
            for xr in x.recs.range_mut(from..) {
                if xr.t >= before {
                    break;
                }
                if xr.prev_partner == NONE && last.next_partner != xr.id {
                    emit_pair(side, xr, last, seq, !expired, expired, options, emit);
                    xr.prev_partner = last.id;
                }
            }
        }
    }

    /// End of input that holds the whole series (`--complete`): pending
    /// records get their `prev` pair although no `next` ever came.
    pub fn complete(&mut self, seq: u64, options: &PairingOptions, emit: &mut impl FnMut(PairRef<'_, P>)) {
        self.emit_overdue(Time::MAX, seq, false, options, emit);
    }

    fn evict(&mut self) {
        for (x, y) in [(0, 1), (1, 0)] {
            if let Some(newest) = self.sides[y].newest {
                let recs = &mut self.sides[x].recs;
                while recs.len() >= 2 && recs[1].t < newest {
                    recs.pop_front();
                }
            }
        }
    }

    /// Newest accepted time of a side.
    pub fn newest(&self, side: Side) -> Option<Time> {
        self.sides[side.index()].newest
    }

    /// Records held, both sides.
    pub fn len(&self) -> usize {
        self.sides[0].recs.len() + self.sides[1].recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records held, both sides: (side, time, seq, payload).
    pub fn held(&self) -> impl Iterator<Item = (Side, Time, u64, &P)> + '_ {
        [Side::Left, Side::Right]
            .into_iter()
            .flat_map(move |side| self.sides[side.index()].recs.iter().map(move |r| (side, r.t, r.seq, &r.payload)))
    }

    /// Smallest `seq` of a record still held.
    pub fn min_seq(&self) -> Option<u64> {
        self.sides.iter().flat_map(|s| s.recs.iter().map(|r| r.seq)).min()
    }
}

fn emit_pair<P>(
    x_side: Side,
    x: &Rec<P>,
    y: &Rec<P>,
    trigger: u64,
    early: bool,
    expired: bool,
    options: &PairingOptions,
    emit: &mut impl FnMut(PairRef<'_, P>),
) {
    if let Some(d) = options.pair_limit() {
        if (x.t as i128 - y.t as i128).abs() > d as i128 {
            return;
        }
    }
    let (l, r) = if x_side == Side::Left { (x, y) } else { (y, x) };
    emit(PairRef { left: &l.payload, left_time: l.t, right: &r.payload, right_time: r.t, trigger, early, expired });
}

/// Records of one side of a key waiting to be put in order.
struct ReorderBuffer<P> {
    waiting: std::collections::BTreeMap<(Time, u64), P>,
    newest_seen: Option<Time>,
}

impl<P> Default for ReorderBuffer<P> {
    fn default() -> Self {
        Self { waiting: Default::default(), newest_seen: None }
    }
}

/// The keys of one rule, by dense key id.
pub struct Pairing<P> {
    pub options: PairingOptions,
    keys: Vec<KeyState<P>>,
    /// Per key, left and right; used only with a reorder window.
    buffers: Vec<[ReorderBuffer<P>; 2]>,
    /// Held records dropped by the horizon, since the start.
    pub expired_records: u64,
}

impl<P> Pairing<P> {
    pub fn new(options: PairingOptions) -> Self {
        Self { options, keys: Vec::new(), buffers: Vec::new(), expired_records: 0 }
    }

    pub fn push(&mut self, key: usize, side: Side, t: Time, seq: u64, payload: P, emit: &mut impl FnMut(PairRef<'_, P>)) -> Result<(), Late> {
        if key >= self.keys.len() {
            self.keys.resize_with(key + 1, KeyState::default);
        }
        let Some(window) = self.options.reorder_window else {
            let expired = self.keys[key].push(side, t, seq, payload, &self.options, emit)?;
            self.expired_records += expired as u64;
            return Ok(());
        };
        if key >= self.buffers.len() {
            self.buffers.resize_with(key + 1, Default::default);
        }
        // Late only when it can no longer be put in order.
        self.keys[key].refuse_late(side, t, &self.options)?;
        let buffer = &mut self.buffers[key][side.index()];
        buffer.waiting.insert((t, seq), payload);
        let seen = buffer.newest_seen.map_or(t, |n| n.max(t));
        buffer.newest_seen = Some(seen);
        self.release(key, side, seen.saturating_sub(window), seq, emit);
        // A side gone quiet must not hold records in its buffer for ever:
        // with a horizon, the key's stream time releases them too.
        if let (Some(horizon), Some(stream)) = (self.options.horizon, self.keys[key].stream_time()) {
            self.release(key, side.other(), stream.saturating_sub(horizon), seq, emit);
        }
        Ok(())
    }

    /// Pushes the records of one side's reorder buffer up to `up_to`, in
    /// order; `trigger` is the arrival that released them.
    fn release(&mut self, key: usize, side: Side, up_to: Time, trigger: u64, emit: &mut impl FnMut(PairRef<'_, P>)) {
        let buffer = &mut self.buffers[key][side.index()];
        while let Some(entry) = buffer.waiting.first_entry() {
            if entry.key().0 > up_to {
                break;
            }
            let ((rt, rseq), payload) = entry.remove_entry();
            match self.keys[key].push_triggered(side, rt, rseq, trigger, payload, &self.options, emit) {
                Ok(expired) => self.expired_records += expired as u64,
                // Overtaken by the horizon while it waited.
                Err(_) => self.expired_records += 1,
            }
        }
    }

    /// `complete` for every key (after releasing what still waits for
    /// reordering); `emit` is told the key of each pair.
    pub fn complete(&mut self, seq: u64, emit: &mut impl FnMut(usize, PairRef<'_, P>)) {
        for (i, k) in self.keys.iter_mut().enumerate() {
            if let Some(buffers) = self.buffers.get_mut(i) {
                // Both sides' waiting records, in time order across sides.
                let mut waiting: Vec<(Time, u64, Side, P)> = Vec::new();
                for side in [Side::Left, Side::Right] {
                    let b = std::mem::take(&mut buffers[side.index()].waiting);
                    waiting.extend(b.into_iter().map(|((t, s), p)| (t, s, side, p)));
                }
                waiting.sort_by_key(|(t, s, _, _)| (*t, *s));
                for (t, s, side, p) in waiting {
                    let _ = k.push_triggered(side, t, s, seq, p, &self.options, &mut |pair| emit(i, pair));
                }
            }
            k.complete(seq, &self.options, &mut |p| emit(i, p));
        }
    }

    /// Every record held that arrived before `below`, reorder buffers
    /// included: (key, seq, payload). Without a reorder window each side of
    /// a key holds its records in arrival order, so only those and the first
    /// after them are read.
    pub fn held_before(&self, below: u64) -> impl Iterator<Item = (usize, u64, &P)> + '_ {
        let in_arrival_order = self.options.reorder_window.is_none();
        let keyed = self.keys.iter().enumerate().flat_map(move |(k, state)| {
            state.sides.iter().flat_map(move |side| {
                side.recs
                    .iter()
                    .take_while(move |r| !in_arrival_order || r.seq < below)
                    .filter(move |r| r.seq < below)
                    .map(move |r| (k, r.seq, &r.payload))
            })
        });
        let waiting = self
            .buffers
            .iter()
            .enumerate()
            .flat_map(move |(k, sides)| sides.iter().flat_map(move |b| b.waiting.iter().filter(move |((_, seq), _)| *seq < below).map(move |((_, seq), p)| (k, *seq, p))));
        keyed.chain(waiting)
    }

    /// Records held over all keys (reorder buffers included).
    pub fn retained(&self) -> usize {
        self.keys.iter().map(KeyState::len).sum::<usize>()
            + self.buffers.iter().flatten().map(|b| b.waiting.len()).sum::<usize>()
    }

    /// Bytes of one held record (for reporting state size).
    pub fn record_bytes() -> usize {
        std::mem::size_of::<Rec<P>>()
    }

    /// Smallest `seq` of any record held: replaying from there rebuilds the
    /// state.
    pub fn min_retained_seq(&self) -> Option<u64> {
        let held = self.keys.iter().filter_map(KeyState::min_seq).min();
        let waiting = self.buffers.iter().flatten().filter_map(|b| b.waiting.keys().map(|(_, s)| *s).min()).min();
        held.into_iter().chain(waiting).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one key over (side, time) arrivals; returns pairs as (l, r)
    /// payload indices in emission order.
    fn run(arrivals: &[(Side, Time)], options: PairingOptions, complete: bool) -> Vec<(usize, usize)> {
        let mut key = KeyState::default();
        let mut out = Vec::new();
        for (i, (side, t)) in arrivals.iter().enumerate() {
            key.push(*side, *t, i as u64, i, &options, &mut |p| out.push((*p.left, *p.right))).unwrap();
        }
        if complete {
            key.complete(u64::MAX, &options, &mut |p| out.push((*p.left, *p.right)));
        }
        out
    }

    fn series(l: impl IntoIterator<Item = Time>, r: impl IntoIterator<Item = Time>) -> Vec<(Side, Time)> {
        let mut v: Vec<(Side, Time)> = l.into_iter().map(|t| (Side::Left, t)).chain(r.into_iter().map(|t| (Side::Right, t))).collect();
        v.sort_by_key(|(s, t)| (*t, *s == Side::Right));
        v
    }

    #[test]
    fn alternating_series_pair_every_neighbour() {
        let arrivals = series((0..50).map(|i| 2 * i), (0..50).map(|i| 2 * i + 1));
        assert_eq!(run(&arrivals, PairingOptions::default(), false).len(), 99);
    }

    #[test]
    fn blocks_of_five() {
        let mut arrivals = Vec::new();
        for (side, range) in [(Side::Left, 0..5), (Side::Right, 5..10), (Side::Left, 10..15), (Side::Right, 15..20)] {
            arrivals.extend(range.map(|t| (side, t)));
        }
        assert_eq!(run(&arrivals, PairingOptions::default(), false).len(), 23);
    }

    #[test]
    fn blocks_of_five_up_to_100_000_records() {
        let arrivals: Vec<(Side, Time)> =
            (0..100_000).map(|t| (if (t / 5) % 2 == 0 { Side::Left } else { Side::Right }, t)).collect();
        let mut key = KeyState::default();
        let mut n = 0u64;
        let mut most = 0;
        for (i, (side, t)) in arrivals.iter().enumerate() {
            key.push(*side, *t, i as u64, (), &PairingOptions::default(), &mut |_| n += 1).unwrap();
            most = most.max(key.len());
        }
        assert_eq!(n, 179_987);
        assert!(most <= 7, "state grew to {most} records");
    }

    #[test]
    fn late_records_are_refused_and_change_nothing() {
        let mut key = KeyState::default();
        let o = PairingOptions::default();
        key.push(Side::Left, 10, 0, (), &o, &mut |_| {}).unwrap();
        assert_eq!(key.push(Side::Left, 9, 1, (), &o, &mut |_| {}), Err(Late { time: 9, newest: 10, why: LateWhy::OwnSide }));
        assert!(key.push(Side::Left, 10, 2, (), &o, &mut |_| {}).is_ok(), "equal times are in order");
    }

    #[test]
    fn max_delta_drops_distant_pairs() {
        let arrivals = series([0, 100], [1, 150]);
        let all = run(&arrivals, PairingOptions::default(), false);
        let near = run(&arrivals, PairingOptions { max_delta: Some(10), ..Default::default() }, false);
        assert!(all.len() > near.len());
        assert_eq!(near, vec![(0, 1)]);
    }

    #[test]
    fn complete_emits_the_prev_pairs_still_waiting() {
        // L at 0, 10, 20 and R at 5: L20's next never comes, and its prev
        // (R5) is not certain without `complete`. (L10 with R5 is R5's next.)
        let arrivals = series([0, 10, 20], [5]);
        let open = run(&arrivals, PairingOptions::default(), false);
        assert_eq!(open, vec![(0, 1), (2, 1)]);
        let done = run(&arrivals, PairingOptions::default(), true);
        assert_eq!(done, vec![(0, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn max_latency_emits_early_and_once() {
        // R stops at 5; L goes on to 55. L20's prev pair (R5) is emitted once
        // L has passed 20 + 20; L40's is not due before 60.
        let arrivals = series([0, 10, 20, 40, 55], [5]);
        let o = PairingOptions { max_latency: Some(20), ..Default::default() };
        let pairs = run(&arrivals, o, false);
        let mut dedup = pairs.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), pairs.len(), "no pair twice: {pairs:?}");
        assert!(pairs.contains(&(2, 1)), "L10 with R5 (R5's next): {pairs:?}");
        assert!(pairs.contains(&(3, 1)), "L20 with R5 emitted early: {pairs:?}");
        assert!(!pairs.contains(&(4, 1)), "L40 is not overdue yet: {pairs:?}");
    }

    /// Pairs (left, right) and whether each was emitted by expiry.
    fn run_horizon(arrivals: &[(Side, Time)], options: PairingOptions) -> (Vec<(usize, usize, bool)>, KeyState<usize>, usize) {
        let mut key = KeyState::default();
        let mut out = Vec::new();
        let mut expired = 0;
        for (i, (side, t)) in arrivals.iter().enumerate() {
            expired += key.push(*side, *t, i as u64, i, &options, &mut |p| out.push((*p.left, *p.right, p.expired))).unwrap();
        }
        (out, key, expired)
    }

    #[test]
    fn a_one_sided_key_holds_at_most_the_horizon_and_its_pair_limit() {
        // Speed without torque: 10,000 records one apart, horizon 10.
        let arrivals: Vec<(Side, Time)> = (0..10_000).map(|t| (Side::Left, t)).collect();
        let options = PairingOptions { horizon: Some(10), ..Default::default() };
        let (pairs, key, expired) = run_horizon(&arrivals, options);
        assert!(pairs.is_empty());
        // Held: times 9979..=9999 (older than stream - H - C = 9979 expire).
        assert_eq!(key.len(), 21);
        assert_eq!(expired, 10_000 - 21);
    }

    #[test]
    fn a_quiet_side_lets_pending_records_expire_with_their_prev() {
        // R has one record at 0 and goes quiet; L goes on. Horizon 10, so no
        // pair spans more than 10: L1..L10 pair with R0, nothing later does.
        let mut arrivals = vec![(Side::Right, 0)];
        arrivals.extend((1..=100).map(|t| (Side::Left, t)));
        let options = PairingOptions { horizon: Some(10), ..Default::default() };
        let (pairs, key, _) = run_horizon(&arrivals, options);
        let mut got: Vec<(usize, usize)> = pairs.iter().map(|&(l, r, _)| (l, r)).collect();
        got.sort();
        assert_eq!(got, (1..=10).map(|l| (l, 0)).collect::<Vec<_>>(), "{pairs:?}");
        // L1 is R0's next (certain at once); L2..L10 wait for a next that
        // never comes and get their prev when they expire.
        assert_eq!(pairs[0], (1, 0, false));
        assert!(pairs[1..].iter().all(|p| p.2), "{pairs:?}");
        assert!(key.len() <= 22, "held {}", key.len());
    }

    #[test]
    fn a_record_beyond_the_horizon_is_late_with_that_reason() {
        let o = PairingOptions { horizon: Some(10), ..Default::default() };
        let mut key = KeyState::default();
        key.push(Side::Left, 100, 0, (), &o, &mut |_| {}).unwrap();
        assert_eq!(
            key.push(Side::Right, 89, 1, (), &o, &mut |_| {}),
            Err(Late { time: 89, newest: 100, why: LateWhy::BeyondHorizon { horizon: 10 } })
        );
        assert!(key.push(Side::Right, 90, 2, (), &o, &mut |_| {}).is_ok(), "exactly the horizon behind is accepted");
    }

    #[test]
    fn the_horizon_caps_max_delta_and_never_widens_it() {
        let both = PairingOptions { max_delta: Some(3), horizon: Some(10), ..Default::default() };
        assert_eq!(both.pair_limit(), Some(3));
        assert_eq!(both.expiry_age(), Some(13));
        let wide = PairingOptions { max_delta: Some(50), horizon: Some(10), ..Default::default() };
        assert_eq!(wide.pair_limit(), Some(10));
        assert_eq!(PairingOptions::default().pair_limit(), None);
        assert_eq!(PairingOptions::default().expiry_age(), None);
    }

    #[test]
    fn a_reorder_buffer_of_a_quiet_side_is_released_by_the_horizon() {
        let options = PairingOptions { reorder_window: Some(5), horizon: Some(10), ..Default::default() };
        let mut pairing: Pairing<()> = Pairing::new(options);
        // R waits in its buffer (nothing 5 newer on R ever comes); L goes on.
        pairing.push(0, Side::Right, 0, 0, (), &mut |_| {}).unwrap();
        for t in 1..200 {
            pairing.push(0, Side::Left, t, t as u64, (), &mut |_| {}).unwrap();
        }
        assert!(pairing.retained() <= 30, "held {}", pairing.retained());
        assert!(pairing.min_retained_seq().unwrap() > 150, "{:?}", pairing.min_retained_seq());
    }
}
