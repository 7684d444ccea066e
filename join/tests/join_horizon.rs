//! The join with a `stateHorizon` (the spec's "Bounded state when machines
//! go quiet") against a brute-force reading of that section: series with
//! quiet stretches, keys with one side only and sides that stop for good, in
//! every interleaving in which no record arrives beyond the horizon. The
//! pairs emitted after *every* arrival are compared, not only the final set.

mod replay;

use std::collections::BTreeSet;

use millrace_join::engine::{KeyState, PairingOptions, Side, Time};
use proptest::prelude::*;

type Pairs = BTreeSet<(usize, usize)>;

/// The extended spec over the records arrived so far (`l`, `r`: each side's
/// arrived prefix), read literally: a pair is never wider than the pair
/// limit C = min(maxDelta, H); a record that the key's stream time has
/// passed by more than H + C has expired and brings its `prev` pair without
/// its `next`.
fn brute_force(l: &[Time], r: &[Time], horizon: Time, max_delta: Option<Time>, complete: bool) -> Pairs {
    let limit = max_delta.map_or(horizon, |d| d.min(horizon));
    let stream = l.iter().chain(r).copied().max().unwrap_or(Time::MIN);
    let mut pairs = Pairs::new();
    for (x_is_left, xs, ys) in [(true, l, r), (false, r, l)] {
        for (i, &t) in xs.iter().enumerate() {
            let next = ys.iter().position(|&y| y >= t);
            let prev = ys.iter().rposition(|&y| y < t);
            let expired = stream > t.saturating_add(horizon + limit);
            let mut add = |j: usize| {
                if (t - ys[j]).abs() <= limit {
                    pairs.insert(if x_is_left { (i, j) } else { (j, i) });
                }
            };
            if let Some(n) = next {
                add(n);
            }
            if let Some(p) = prev {
                if next.is_some() || expired || complete {
                    add(p);
                }
            }
        }
    }
    pairs
}

/// A side's times: mostly small steps, sometimes a quiet stretch longer
/// than any horizon below, and a length that may be zero (a one-sided key)
/// or short (a side that stops for good while the other goes on).
fn series() -> impl Strategy<Value = Vec<Time>> {
    let step = prop_oneof![8 => 0i64..4, 1 => 30i64..90];
    (0i64..20, prop::collection::vec(step, 0..40)).prop_map(|(start, steps)| {
        let mut t = start;
        steps
            .into_iter()
            .map(|s| {
                t += s;
                t
            })
            .collect()
    })
}

/// An arrival order keeping each side's order in which no record arrives
/// older than the key's stream time minus `horizon`: `choices` picks a side
/// while both may go; a side whose next record would be beyond the horizon
/// waits (the side that set the stream time can go while it has records;
/// once it has none, what the other side still has would arrive beyond the
/// horizon and is left out).
fn interleave(l: &[Time], r: &[Time], choices: &[bool], horizon: Time) -> Vec<(Side, usize)> {
    let (mut i, mut j) = (0, 0);
    let mut stream = Time::MIN;
    let mut out = Vec::new();
    let mut k = 0;
    while i < l.len() || j < r.len() {
        let ok = |t: Option<&Time>| t.is_some_and(|&t| t >= stream.saturating_sub(horizon));
        let (left_ok, right_ok) = (ok(l.get(i)), ok(r.get(j)));
        let take_left = match (left_ok, right_ok) {
            (true, true) => {
                k += 1;
                choices.get(k - 1).copied().unwrap_or(true)
            }
            (true, false) => true,
            (false, true) => false,
            (false, false) => break,
        };
        let t = if take_left { l[i] } else { r[j] };
        stream = stream.max(t);
        if take_left {
            out.push((Side::Left, i));
            i += 1;
        } else {
            out.push((Side::Right, j));
            j += 1;
        }
    }
    out
}

fn options() -> impl Strategy<Value = (Time, Option<Time>)> {
    (3i64..25, prop_oneof![Just(None), (0i64..30).prop_map(Some)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// After every arrival, the pairs emitted so far are exactly the
    /// extended spec's pairs of the records arrived so far, none twice; and
    /// the state holds nothing older than the horizon and twice the pair
    /// limit (a waiting record's `prev` is kept, and with it its `next`).
    #[test]
    fn every_prefix_emits_the_bounded_spec_pairs_once(
        l in series(),
        r in series(),
        interleavings in prop::collection::vec(prop::collection::vec(any::<bool>(), 80), 3),
        (horizon, max_delta) in options(),
        complete in any::<bool>(),
    ) {
        let options = PairingOptions { horizon: Some(horizon), max_delta, ..Default::default() };
        let limit = max_delta.map_or(horizon, |d| d.min(horizon));
        for choices in &interleavings {
            let order = interleave(&l, &r, choices, horizon);
            let mut key: KeyState<(Side, usize)> = KeyState::default();
            let mut emitted: Vec<(usize, usize)> = Vec::new();
            let (mut nl, mut nr) = (0, 0);
            for (seq, &(side, i)) in order.iter().enumerate() {
                let t = if side == Side::Left { l[i] } else { r[i] };
                let pushed = key.push(side, t, seq as u64, (side, i), &options, &mut |p| emitted.push((p.left.1, p.right.1)));
                prop_assert!(pushed.is_ok(), "record {:?} at {} refused: {:?}", side, t, pushed);
                if side == Side::Left { nl += 1 } else { nr += 1 }
                let set: Pairs = emitted.iter().copied().collect();
                prop_assert_eq!(set.len(), emitted.len(), "a pair was emitted twice: {:?}", emitted);
                prop_assert_eq!(&set, &brute_force(&l[..nl], &r[..nr], horizon, max_delta, false), "after {} arrivals of {:?}", seq + 1, order);
                let stream = l[..nl].iter().chain(&r[..nr]).copied().max().unwrap();
                let old = key.held().filter(|h| h.1 < stream - horizon - 2 * limit).count();
                prop_assert_eq!(old, 0, "held records older than the horizon and twice the pair limit");
            }
            if complete {
                key.complete(u64::MAX, &options, &mut |p| emitted.push((p.left.1, p.right.1)));
                let set: Pairs = emitted.iter().copied().collect();
                prop_assert_eq!(set.len(), emitted.len(), "a pair was emitted twice: {:?}", emitted);
                prop_assert_eq!(set, brute_force(&l[..nl], &r[..nr], horizon, max_delta, true));
            }
        }
    }

    /// A crash anywhere: replaying from the oldest record still held (which
    /// the horizon keeps moving for quiet and one-sided keys) and
    /// suppressing pairs triggered before the crash gives the uninterrupted
    /// output.
    #[test]
    fn rebuilding_from_the_oldest_held_record_changes_nothing(
        l in series(),
        r in series(),
        choices in prop::collection::vec(any::<bool>(), 80),
        (horizon, max_delta) in options(),
        cut_at in 0usize..80,
    ) {
        let options = PairingOptions { horizon: Some(horizon), max_delta, ..Default::default() };
        let order = interleave(&l, &r, &choices, horizon);
        let (emitted, want) = replay::across_a_crash(&l, &r, &order, &options, cut_at.min(order.len()));
        prop_assert_eq!(emitted, want);
    }
    /// The join stage's bounded replay: a crash re-reads at most `limit`
    /// records; what it held from before comes back from the state copy.
    /// With `maxLatency` W, in orders where no side lags by more than W (its
    /// own determinism bound). Beyond it, a record whose `prev` pair went out
    /// early can be replayed without the partner of that early pair, and get
    /// a second `prev` pair.
    #[test]
    fn a_bounded_replay_with_the_held_records_restored_changes_nothing(
        l in series(),
        r in series(),
        choices in prop::collection::vec(any::<bool>(), 80),
        (horizon, max_delta) in options(),
        max_latency in prop_oneof![Just(None), (0i64..15).prop_map(Some)],
        cut_at in 0usize..80,
        limit in 0usize..10,
    ) {
        let options = PairingOptions { horizon: Some(horizon), max_delta, max_latency, ..Default::default() };
        let order = interleave(&l, &r, &choices, max_latency.map_or(horizon, |w| w.min(horizon)));
        let (emitted, want) = replay::across_a_crash_with_a_state_copy(&l, &r, &order, &options, cut_at.min(order.len()), limit);
        prop_assert_eq!(emitted, want);
    }
}

/// The spec section's own case at scale: speed without torque holds at most
/// a horizon and a pair limit of records, however long it goes on.
#[test]
fn a_side_without_partner_holds_a_bounded_state_for_a_million_records() {
    let options = PairingOptions { horizon: Some(1_000), ..Default::default() };
    let mut key: KeyState<()> = KeyState::default();
    let mut most = 0;
    for t in 0..1_000_000 {
        key.push(Side::Left, t, t as u64, (), &options, &mut |_| panic!("nothing to pair with")).unwrap();
        most = most.max(key.len());
    }
    assert_eq!(most, 2_001, "records within the horizon and the pair limit (2 x 1,000 + 1)");
    assert_eq!(key.min_seq(), Some(1_000_000 - 2_001));
}
